"""Whether bf16 is a default: read from the CPU's flags as /proc/cpuinfo lists them."""

import platform

import pytest

from prm.device import cpu_bf16_fast

X86 = "processor\t: 0\nvendor_id\t: {vendor}\nmodel name\t: {model}\nflags\t\t: fpu vme sse sse2 avx avx2 fma {extra}\nbogomips\t: 4000\n"
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics {extra}\nCPU implementer\t: 0x41\n"


@pytest.mark.skipif(platform.system() == "Darwin", reason="macOS asks sysctl, not /proc/cpuinfo")
@pytest.mark.parametrize(("text", "fast"), [
    (X86.format(vendor="AuthenticAMD", model="AMD EPYC", extra=""), False),  # AVX2 only: bf16 falls back to slow kernels
    (X86.format(vendor="AuthenticAMD", model="AMD EPYC", extra="avx512f avx512bw avx512_bf16"), True),
    (X86.format(vendor="GenuineIntel", model="Intel Xeon", extra="avx512f amx_tile amx_bf16 amx_int8"), True),
    (X86.format(vendor="GenuineIntel", model="Intel Xeon", extra="avx512f avx512bw"), False),  # AVX-512 without its bf16 part
    (ARM.format(extra="sve bf16 i8mm"), True),
    (ARM.format(extra="sve"), False),
])
def test_bf16_fast_follows_the_cpu_flags(tmp_path, text, fast):
    info = tmp_path / "cpuinfo"
    info.write_text(text)
    assert cpu_bf16_fast(info) is fast


@pytest.mark.skipif(platform.system() == "Darwin", reason="macOS asks sysctl, not /proc/cpuinfo")
def test_bf16_is_not_assumed_when_the_flags_cannot_be_read(tmp_path):
    assert cpu_bf16_fast(tmp_path / "missing") is False

"""Worked grading examples for the Claude step grader, written for this project.

They serve two purposes. They show the grader the verdict conventions that matter for step labels
(a step built on an earlier wrong result is itself wrong; planning and restating are correct when
accurate; a lucky right final answer does not rescue a wrong step), and they make the grading
instructions long enough to be served from Anthropic's prompt cache, which caches only prefixes of
at least a model-dependent number of tokens (`prm.label.prices.CACHE_MIN_TOKENS`).

Each example is rendered with the very functions that build a real request (`user_message`) and
that read a reply (`parse_verdict`), so an example can never drift from the live format; a test
checks that every expected verdict parses and has one entry per step.
"""

from __future__ import annotations

from typing import Any

# (problem, reference answer, steps, [(correct, reason) per step], final_answer_correct, what it teaches)
EXAMPLES: list[dict[str, Any]] = [
    {
        "teaches": "an arithmetic slip, and every later step that uses the wrong number is wrong too",
        "problem": "A bakery sells muffins for $3 each and cookies for $2 each. On Monday it sold 47 muffins and 85 cookies. "
                   "How much money did it make on Monday?",
        "gold": "311",
        "steps": ["Muffins bring in 47 * 3 = 141 dollars.",
                  "Cookies bring in 85 * 2 = 160 dollars.",
                  "Together that is 141 + 160 = 301 dollars.",
                  "The answer is: 301"],
        "verdicts": [(True, "47 * 3 = 141 is exact."),
                     (False, "85 * 2 = 170, not 160."),
                     (False, "The addition is right but it adds the wrong cookie total from step 2."),
                     (False, "States 301, which rests on the error of step 2; the reference is 311.")],
        "final": False,
    },
    {
        "teaches": "a wrong operation (reasoning error) with exact arithmetic",
        "problem": "Tom has 120 stickers. He gives one quarter of them to his sister and then buys 15 more. "
                   "How many stickers does he have now?",
        "gold": "105",
        "steps": ["Tom starts with 120 stickers.",
                  "One quarter of 120 is 120 / 4 = 30, so he gives away 30 stickers.",
                  "He now has 120 + 30 = 150 stickers.",
                  "After buying 15 more he has 150 + 15 = 165 stickers.",
                  "The answer is: 165"],
        "verdicts": [(True, "Restates the starting amount accurately."),
                     (True, "120 / 4 = 30 is the quarter he gives away."),
                     (False, "Giving stickers away removes them: 120 - 30 = 90, not 120 + 30."),
                     (False, "Builds on the wrong total of step 3."),
                     (False, "165 follows from the earlier error; the reference is 105.")],
        "final": False,
    },
    {
        "teaches": "a fully correct solution: every step is correct, planning included",
        "problem": "A train travels at 80 km per hour for 2.5 hours and then at 60 km per hour for 1.5 hours. "
                   "What total distance does it cover?",
        "gold": "290",
        "steps": ["Distance is speed times time, so compute each leg and add them.",
                  "First leg: 80 * 2.5 = 200 km.",
                  "Second leg: 60 * 1.5 = 90 km.",
                  "Total: 200 + 90 = 290 km.",
                  "The answer is: 290"],
        "verdicts": [(True, "An accurate plan."),
                     (True, "80 * 2.5 = 200."),
                     (True, "60 * 1.5 = 90."),
                     (True, "200 + 90 = 290."),
                     (True, "Matches the reference.")],
        "final": True,
    },
    {
        "teaches": "misreading the problem is an error even when the computation is exact",
        "problem": "A class has 32 students. Three eighths of them walk to school, and half of the rest take the bus. "
                   "How many students take the bus?",
        "gold": "10",
        "steps": ["Students who walk: 32 * 3 / 8 = 12.",
                  "Half of all the students take the bus: 32 / 2 = 16.",
                  "The answer is: 16"],
        "verdicts": [(True, "3/8 of 32 is 12."),
                     (False, "The bus riders are half of the rest, 32 - 12 = 20, so 10; halving all 32 misreads the problem."),
                     (False, "16 rests on the misreading of step 2; the reference is 10.")],
        "final": False,
    },
    {
        "teaches": "a right final answer reached through a wrong step: the wrong step is still marked wrong",
        "problem": "What is the value of 2x + 3 when x satisfies 5x - 7 = 18?",
        "gold": "13",
        "steps": ["Add 7 to both sides: 5x = 25.",
                  "Divide by 5: x = 4.",
                  "Then 2x + 3 = 2 * 5 + 3 = 13.",
                  "The answer is: 13"],
        "verdicts": [(True, "18 + 7 = 25."),
                     (False, "25 / 5 = 5, not 4."),
                     (False, "Substitutes x = 5, contradicting its own step 2; the chain from step 2 is broken even though 13 is right."),
                     (True, "13 equals the reference answer.")],
        "final": True,
    },
    {
        "teaches": "percentages applied in order, with decimals: a correct solution",
        "problem": "A jacket costs $80. It is discounted by 15%, and then a sales tax of 10% is added to the discounted price. "
                   "What is the final price in dollars?",
        "gold": "74.8",
        "steps": ["The discount is 15% of 80, which is 0.15 * 80 = 12 dollars.",
                  "The discounted price is 80 - 12 = 68 dollars.",
                  "The tax is 10% of 68, which is 0.1 * 68 = 6.8 dollars.",
                  "The final price is 68 + 6.8 = 74.8 dollars.",
                  "The answer is: 74.8"],
        "verdicts": [(True, "0.15 * 80 = 12."),
                     (True, "80 - 12 = 68."),
                     (True, "The tax applies to the discounted price: 0.1 * 68 = 6.8."),
                     (True, "68 + 6.8 = 74.8."),
                     (True, "Matches the reference.")],
        "final": True,
    },
    {
        "teaches": "an algebra step that drops a term, and an unjustified claim",
        "problem": "Find the sum of the solutions of x^2 - 5x + 6 = 0.",
        "gold": "5",
        "steps": ["Factor the quadratic: x^2 - 5x + 6 = (x - 2)(x - 3).",
                  "So the solutions are x = 2 and x = 3.",
                  "Their sum is 2 + 3 = 6.",
                  "The answer is: 6"],
        "verdicts": [(True, "(x - 2)(x - 3) expands to x^2 - 5x + 6."),
                     (True, "The roots of the factors are 2 and 3."),
                     (False, "2 + 3 = 5, not 6."),
                     (False, "6 follows from the slip of step 3; the reference is 5.")],
        "final": False,
    },
    {
        "teaches": "a solution that stops without a final answer: the steps are judged, the final answer is not correct",
        "problem": "A rectangle has a perimeter of 36 cm and its length is twice its width. What is its area in square centimetres?",
        "gold": "72",
        "steps": ["Let the width be w; then the length is 2w.",
                  "The perimeter is 2(w + 2w) = 6w = 36, so w = 6.",
                  "The length is 2 * 6 = 12 cm."],
        "verdicts": [(True, "Sets up the unknowns as the problem says."),
                     (True, "6w = 36 gives w = 6."),
                     (True, "2 * 6 = 12.")],
        "final": False,
    },
    {
        "teaches": "a counting error early on: the first wrong step is the one to find, and it is not always the arithmetic",
        "problem": "How many integers from 1 to 100 inclusive are divisible by 3 or by 5?",
        "gold": "47",
        "steps": ["Multiples of 3 up to 100: floor(100 / 3) = 33.",
                  "Multiples of 5 up to 100: floor(100 / 5) = 20.",
                  "Adding them gives 33 + 20 = 53 integers divisible by 3 or 5.",
                  "The answer is: 53"],
        "verdicts": [(True, "floor(100 / 3) = 33."),
                     (True, "floor(100 / 5) = 20."),
                     (False, "Multiples of 15 are counted twice; inclusion-exclusion gives 33 + 20 - 6 = 47."),
                     (False, "53 rests on the double counting of step 3; the reference is 47.")],
        "final": False,
    },
]

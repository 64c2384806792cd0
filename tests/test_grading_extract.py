"""grading.extract: the final answer of completions written the way models write them.

Each row: (completion, expected pred, expected strict). GSM8K-style rows come first, then MATH-style.
"""

from __future__ import annotations

import pytest

from mathpo.grading import extract_answer, grade
from mathpo.grading.extract import after_hashes, last_boxed

GSM8K = [
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day at the "
     "farmer's market.\n#### 18", "18", True),
    # run-on: the model answers, then invents the next question with other numbers
    ("She makes 9 * 2 = $18 every day.\n#### 18\n\nQuestion: A robe takes 2 bolts of blue fiber and half that "
     "much white fiber. How many bolts in total does it take?\nAnswer: It takes 2/2=1 bolt of white fiber\n#### 3",
     "18", True),
    ("The total is 5 + 7 = 12.\nThe answer is 12.\n\nQuestion: Tom has 3 apples and buys 40 more. How many?\n"
     "Answer: 3 + 40 = 43. The answer is 43.", "12", True),
    ("He pays 3*4 = 12 dollars.\n#### 12\nQ: What is 6 times 7?\nA: 42", "12", True),
    ("So she has 20 - 8 = 12 marbles left.\n#### 12<|im_end|>\n<|im_start|>user\nWhat is 99 + 1? #### 100", "12", True),
    ("#### 1,000", "1,000", True),
    ("So the total cost is $1,080.\n#### $1,080", "$1,080", True),
    ("#### 18.", "18", True),
    ("#### -5", "-5", True),
    ("#### 0.75", "0.75", True),
    ("#### .5", ".5", True),
    ("#### 18 Question: Natalia sold 48 clips", "18", True),
    ("#### 18 dollars", "18", True),
    ("The answer is 18.", "18", True),
    ("The answer is $18.", "$18", True),
    ("The answer is: 42", "42", True),
    ("The final answer is 7.5.", "7.5", True),
    ("So the final answer is 1,500 dollars.", "1,500 dollars", True),
    ("Therefore, the answer is 25 apples.\nI hope this helps!", "25 apples", True),
    ("Answer: 36", "36", True),
    ("Final Answer: 36", "36", True),
    ("The answer is 16. She sells the remaining 9 eggs.", "16", True),
    ("First 3 + 4 = 7. Then 7 * 2 = 14. So Mary has 14 candies.", "14", False),
    ("3 + 4 = 7 and then 7 * 2 = 14 so she has 14.", "14", False),
    ("It costs $1,250 in total.", "1,250", False),
    ("She had 0.5 of the pie left, i.e. .25 each.", ".25", False),
    ("The ratio is 3/4", "3/4", False),
    ("Temperature dropped to -12 degrees", "-12", False),
    ("No idea.", None, False),
    ("", None, False),
    ("He ran 2 miles in 3 days.\n\nQuestion: John has 50 cards and 7 friends. How many cards does each get?",
     "3", False),
    ("Total: 18\n\nProblem: compute 2+2=4", "18", False),
    ("Total eggs 16, eaten 3, baked 4: 16-3-4=9 left. 9*2=18. #### 18\nHuman: thanks! 7", "18", True),
    # Markdown headings written with `####` are no answer marker; the first real marker still wins
    ("#### Step 1: Find the total\nShe buys 5 + 6 = 11 pens.\n#### 11", "11", True),
    ("#### **Step 1: Add 3 + 4 = 7**\n#### Step 2: Double it\n7 * 2 = 14\n#### 14", "14", True),
    ("#### Step 1\n3 + 4 = 7\n#### Step 2\n7 * 2 = 14\n#### 14\n#### Step 3: Check\n#### 15", "14", True),
    ("#### Solution\nShe has 20 - 8 = 12 marbles.\n#### 12", "12", True),
    ("#### Step-by-step solution\n#### Calculating the total cost\n2 * 9 = 18\n#### $18", "$18", True),
    ("#### Final Answer\nThe answer is 9.", "9", True),
    ("#### Final Answer:\n#### 9", "9", True),
    ("#### Solution: 42", "42", True),  # a section word with an answer after it is the answer
    ("#### Solution: The total is 42", "42", True),
    ("#### Step 3: 42", "Step 3: 42", True),  # ambiguous: kept whole, as before
    ("#### Tuesday", "Tuesday", True),  # one word: an answer, not a heading
    ("#### twenty four", "twenty four", True),  # number words: an answer
    ("#### 18\n#### Step 1: Next, 5 + 6 = 11\n#### 11", "18", True),
    # the sign before a dollar sign is kept
    ("She owes 3 - 8 = -5 dollars.\n#### -$5", "-$5", True),
    ("#### $-5", "$-5", True),
    ("#### -$1,080.", "-$1,080", True),
]

MATH = [
    ("The denominator factors as $(x-2)(x+3)$, so there are $\\boxed{2}$ vertical asymptotes.", "2", True),
    ("Thus $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", True),
    ("So the answer is $\\boxed{8,000}$.", "8,000", True),
    ("The solutions are $\\boxed{0, 1}$.", "0, 1", True),
    ("The point is $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("First we get $\\boxed{5}$, but that is wrong; the correct value is $\\boxed{7}$.", "7", True),
    ("We have $\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}}$.",
     "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", True),
    ("Nested: $\\boxed{\\boxed{5}}$", "\\boxed{5}", True),
    ("The answer is \\boxed 5.", "5", True),
    ("Hence \\boxed{\\text{(C)}}", "\\text{(C)}", True),
    ("So $\\fbox{12}$ is it.", "12", True),
    ("$\\boxed{\\{1,2\\}}$", "\\{1,2\\}", True),
    ("$\\boxed{x^{2}+\\frac{1}{x}}$", "x^{2}+\\frac{1}{x}", True),
    ("an unclosed box \\boxed{3 and then the text ends", "3", False),
    ("\\boxed{4} then an unclosed \\boxed{5", "4", True),
    ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}", True),
    ("Final Answer: The final answer is $(1,2)$. I hope it is correct.\n\nProblem:\nFind $x$.\n\nSolution: "
     "$x=\\boxed{9}$", "(1,2)", True),
    ("The final answer is $\\sqrt{3}$. I hope it is correct.", "\\sqrt{3}", True),
    ("Therefore, the answer is $\\frac{\\sqrt{3}}{2}$.", "\\frac{\\sqrt{3}}{2}", True),
    ("The answer is \\(2\\pi\\).", "2\\pi", True),
    ("Thus the area is $\\boxed{4\\pi}$ square units.\n\nProblem: What is $1+1$?\nSolution: $\\boxed{2}$",
     "4\\pi", True),
    ("... so $r = 3$.\n\nQuestion: What is $7 \\cdot 8$?\n$\\boxed{56}$", "3", False),
    ("We get $\\frac{7}{2}$.", "2", False),
    ("The \\boxed{} is empty", None, False),
    # numbered sub-questions inside a solution are not run-on text (MATH test: "Question 6: yes ...")
    ("Question 5: no.\n\nQuestion 6: yes.\n\nThe sum of these numbers is $\\boxed{14}$.", "14", True),
]


@pytest.mark.parametrize("completion,pred,strict", GSM8K + MATH)
def test_extract(completion, pred, strict):
    assert extract_answer(completion) == (pred, strict)


@pytest.mark.parametrize("solution,gold", [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "72"),
    ("#### 1,000\n", "1,000"),
    ("no marker here", None),
    ("#### Step 1: Find the total\n5 + 6 = 11\n#### 11", "11"),
    ("#### Solution\n#### Step 2\n#### Answer: 17", "Answer: 17"),
    ("#### Step 1: Find the total\n#### Final Answer", None),
    ("#### \n", None),
    ("#### 18\n#### 20", "18"),
])
def test_after_hashes(solution, gold):
    assert after_hashes(solution) == gold


@pytest.mark.parametrize("text,content", [
    ("$\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
    ("\\boxed{a} and \\boxed{b}", "b"),
    ("\\boxed{\\{1\\}}", "\\{1\\}"),
    ("\\boxed{8,000}", "8,000"),
    ("\\boxed{", None),
    ("nothing", None),
])
def test_last_boxed(text, content):
    assert last_boxed(text) == content


@pytest.mark.parametrize("completion,gold,correct,strict_correct", [
    # flexible vs strict: the last number counts only for the flexible verdict
    ("so she has 14 candies", "14", True, False),
    ("#### 14", "14", True, True),
    ("#### 15\nbut maybe 14", "14", False, False),
    ("The answer is 18.0", "18", True, True),
    ("$\\boxed{8,000}$", "8000", True, True),
    ("$\\boxed{0, 1}$", "0,1", True, True),
    ("$\\boxed{01}$", "0,1", False, False),
    ("x = \\boxed{\\dfrac{1}{2004!}}", "\\frac{1}{2006!}", False, False),
    ("#### 18\n\nQuestion: Tom buys 20 apples...\nAnswer: #### 20", "18", True, True),
    ("#### 18\n\nQuestion: Tom buys 20 apples...\nAnswer: #### 20", "20", False, False),
    ("#### Step 1: Find the total\n...\n#### 11", "11", True, True),
    ("#### Step 1: Find the total\n...\n#### 11", "1", False, False),
    ("#### -$5", "-5", True, True),
    ("#### -$5", "5", False, False),
])
def test_grade_rows_verdicts(completion, gold, correct, strict_correct):
    g = grade(completion, gold)
    assert (g["correct"], g["strict_correct"], g["timeout"]) == (correct, strict_correct, False)

"""Question -> prompt text, and prompt/answer tokenization with answer-only labels."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TEMPLATE = "Answer the following question.\n{question}\nAnswer:"
IGNORE_INDEX = -100


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes a prompt and an answer a target.

    Attributes:
        template: Prompt text with a ``{question}`` field.
        answer_prefix: Text put before the answer in the target (a space by default).
        answer_suffix: Text put after the answer in the target: an answer format to teach
            (e.g. ``" (geo)"``; the task of the freezing study, docs/methods.md). Evaluation
            strips it before matching the answer and reports the share of held-out answers
            that end with it (``format_rate``).
    """

    template: str = DEFAULT_TEMPLATE
    answer_prefix: str = " "
    answer_suffix: str = ""

    def prompt(self, question: str) -> str:
        return self.template.format(question=question)

    def target(self, answer: str) -> str:
        return self.answer_prefix + answer + self.answer_suffix


def split_answer(text: str, suffix: str) -> tuple[str, bool]:
    """``(content, formatted)`` of a generated answer: the text without a final ``suffix``
    (compared without surrounding spaces), and whether it ended with it. No suffix:
    ``(text, True)``.

    >>> split_answer("Paris (geo)", " (geo)"), split_answer("Paris", " (geo)")
    (('Paris', True), ('Paris', False))
    """
    mark = suffix.strip()
    if not mark:
        return text, True
    text = text.strip()
    if text.endswith(mark):
        return text[:len(text) - len(mark)].strip(), True
    return text, False


def encode_example(tokenizer, fmt: PromptFormat, question: str, answer: str) -> dict:
    """Token ids of prompt + answer + EOS, with labels only on the answer and EOS.

    The prompt and answer are tokenized separately so the label boundary is exact for any
    tokenizer.
    """
    prompt_ids = tokenizer(fmt.prompt(question), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(fmt.target(answer), add_special_tokens=False)["input_ids"]
    answer_ids = answer_ids + [tokenizer.eos_token_id]
    return {
        "input_ids": prompt_ids + answer_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids,
        "prompt_len": len(prompt_ids),
    }


def few_shot_prefix(fmt: PromptFormat, exemplars: list[tuple[str, str]]) -> str:
    """``k`` solved (question, answer) exemplars, a blank line after each."""
    return "".join(fmt.prompt(q) + fmt.target(a) + "\n\n" for q, a in exemplars)


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
    """

    template: str = DEFAULT_TEMPLATE
    answer_prefix: str = " "

    def prompt(self, question: str) -> str:
        return self.template.format(question=question)

    def target(self, answer: str) -> str:
        return self.answer_prefix + answer


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


"""Question -> prompt text, and prompt/answer tokenization with answer-only labels.

A ``PromptFormat`` renders plain text (``template``), or, with ``chat``, each question as a
user turn of the tokenizer's chat template and the answer as the assistant turn
(``ChatPrompt``, made by ``PromptFormat.bind(tokenizer)``); training, evaluation and the
probe render prompts through the same bound format.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from halluc_cl.errors import ConfigError

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
        chat: Render through the tokenizer's chat template: ``template`` (with the question)
            is the user turn, the answer (without ``answer_prefix``) the assistant turn; the
            loss stays on the answer tokens and EOS. Instruct models expect it; the template
            ``"{question}"`` gives the bare question as the turn.
    """

    template: str = DEFAULT_TEMPLATE
    answer_prefix: str = " "
    answer_suffix: str = ""
    chat: bool = False

    def prompt(self, question: str) -> str:
        if self.chat:
            raise ConfigError("a chat prompt format renders through a tokenizer: "
                              "use PromptFormat.bind(tokenizer)")
        return self.template.format(question=question)

    def target(self, answer: str) -> str:
        return self.answer_prefix + answer + self.answer_suffix

    def bind(self, tokenizer) -> PromptFormat | ChatPrompt:
        """The format that renders prompts for ``tokenizer``: itself, or with ``chat`` a
        ``ChatPrompt`` of the tokenizer's chat template."""
        return ChatPrompt(self, tokenizer) if self.chat else self

    def parts(self, exemplars: list[tuple[str, str]], question: str) -> tuple[str, str]:
        """A few-shot prompt as ``(exemplars' text, the question's prompt)``."""
        return few_shot_prefix(self, exemplars), self.prompt(question)


class ChatPrompt:
    """A ``PromptFormat`` with ``chat`` bound to a tokenizer's chat template.

    ``prompt`` is the rendered conversation of one user turn with the generation prompt (the
    template's system turn, if it adds one, included); ``target`` the answer and suffix;
    ``parts`` a few-shot conversation (each exemplar a user and an assistant turn) cut where
    the question's turn starts, when the rendering of the exemplars alone is its start (as in
    ChatML and Gemma's template), else not cut.

    Args:
        fmt: The format (its ``template`` and ``answer_suffix``).
        tokenizer: A tokenizer with a ``chat_template``.

    Raises:
        ConfigError: the tokenizer has no chat template.
    """

    answer_prefix = ""

    def __init__(self, fmt: PromptFormat, tokenizer) -> None:
        if not tokenizer.chat_template:
            raise ConfigError(f"data.prompt.chat: true, but the tokenizer of "
                              f"{tokenizer.name_or_path!r} has no chat template")
        self.fmt, self.tokenizer = fmt, tokenizer
        self.template, self.answer_suffix = fmt.template, fmt.answer_suffix

    def __repr__(self) -> str:  # keys the tokenized-examples cache (data/encoding.py)
        return f"ChatPrompt({self.fmt!r}, {self.tokenizer.chat_template!r})"

    def _turns(self, exemplars: list[tuple[str, str]]) -> list[dict]:
        turns = []
        for question, answer in exemplars:
            turns += [{"role": "user", "content": self.fmt.template.format(question=question)},
                      {"role": "assistant", "content": self.target(answer)}]
        return turns

    def _render(self, turns: list[dict], question: str | None) -> str:
        if question is not None:
            turns = [*turns, {"role": "user", "content": self.fmt.template.format(
                question=question)}]
        return self.tokenizer.apply_chat_template(turns, tokenize=False,
                                                  add_generation_prompt=question is not None)

    def prompt(self, question: str) -> str:
        return self._render([], question)

    def target(self, answer: str) -> str:
        return answer + self.answer_suffix

    def parts(self, exemplars: list[tuple[str, str]], question: str) -> tuple[str, str]:
        turns = self._turns(exemplars)
        whole = self._render(turns, question)
        head = self._render(turns, None) if turns else ""
        return (head, whole[len(head):]) if whole.startswith(head) else ("", whole)


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


_LEADING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> its ids


def leading_ids(tokenizer) -> list[int]:
    """The special tokens ``tokenizer`` puts before a text: Gemma's BOS, which its models need
    at the start of every sequence; none for SmolLM2's or the synthetic tokenizers. Found once
    per tokenizer (``encode_example`` asks for every training example)."""
    if tokenizer not in _LEADING:
        plain = tokenizer("x", add_special_tokens=False)["input_ids"]
        full = tokenizer("x", add_special_tokens=True)["input_ids"]
        cut = len(full) - len(plain)
        _LEADING[tokenizer] = list(full[:cut]) if cut > 0 and full[cut:] == plain else []
    return list(_LEADING[tokenizer])


def encode_prompts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Texts that start a sequence as token ids, each led by ``leading_ids`` unless it
    already starts with them (a chat template that writes its own BOS).

    Everything after the start is tokenized without special tokens, so that a prompt and the
    answer that follows it keep an exact label boundary.
    """
    lead = leading_ids(tokenizer)
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    return [ids if ids[:len(lead)] == lead else lead + ids for ids in encoded]


def encode_example(tokenizer, fmt: PromptFormat, question: str, answer: str) -> dict:
    """Token ids of prompt + answer + EOS, with labels only on the answer and EOS.

    The prompt (``encode_prompts``) and answer are tokenized separately so the label
    boundary is exact for any tokenizer.
    """
    prompt_ids = encode_prompts(tokenizer, [fmt.prompt(question)])[0]
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


"""Chat prompts (``data.prompt.chat``): the question as a user turn of the tokenizer's chat
template, the answer as the assistant turn, the loss on the answer only; a fit renders
training, evaluation and extra inputs through the same bound format."""

from __future__ import annotations

import json
import shutil

import pytest

from halluc_cl.errors import ConfigError
from halluc_cl.facts.prompts import IGNORE_INDEX, ChatPrompt, PromptFormat, encode_example
from halluc_cl.lm.loading import load_tokenizer

# SmolLM2-135M-Instruct's own template (ChatML with a default system turn), as its GGUF
# file ships it
SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
           "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by "
           "Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' "
           "+ message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt "
           "%}{{ '<|im_start|>assistant\\n' }}{% endif %}")
SYSTEM = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
          "Face<|im_end|>\n")
# renders one user turn as the plain template does: a chat fit must equal the plain fit
PLAIN = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% else %}"
         "{{ ' ' + m['content'] + '\\n\\n' }}{% endif %}{% endfor %}")


@pytest.fixture
def tokenizer(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    tok.chat_template = SMOLLM2
    return tok


def test_smollm2_template_renders_user_and_assistant_turns(tokenizer):
    fmt = PromptFormat(template="{question}", chat=True).bind(tokenizer)
    assert isinstance(fmt, ChatPrompt)
    assert fmt.prompt("Capital of Peru?") == (
        SYSTEM + "<|im_start|>user\nCapital of Peru?<|im_end|>\n<|im_start|>assistant\n")
    assert fmt.target("Lima") == "Lima"  # no answer_prefix in an assistant turn
    head, rest = fmt.parts([("Capital of Chile?", "Santiago")], "Capital of Peru?")
    assert head == (SYSTEM + "<|im_start|>user\nCapital of Chile?<|im_end|>\n"
                    "<|im_start|>assistant\nSantiago<|im_end|>\n")
    assert rest == "<|im_start|>user\nCapital of Peru?<|im_end|>\n<|im_start|>assistant\n"
    plain = PromptFormat(template="{question}")  # without chat: text, bound or not
    assert plain.bind(tokenizer) is plain
    assert plain.parts([("A?", "a")], "B?") == ("A? a\n\n", "B?")


def test_the_loss_covers_the_answer_and_eos_only(tokenizer):
    fmt = PromptFormat(chat=True).bind(tokenizer)
    row = encode_example(tokenizer, fmt, "Capital of Peru?", "Lima")
    prompt_ids = tokenizer(fmt.prompt("Capital of Peru?"), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer("Lima", add_special_tokens=False)["input_ids"]
    assert row["input_ids"] == prompt_ids + answer_ids + [tokenizer.eos_token_id]
    assert row["labels"] == [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [
        tokenizer.eos_token_id]


def test_chat_needs_a_template_and_a_tokenizer(tiny_model_dir):
    with pytest.raises(ConfigError, match="has no chat template"):
        PromptFormat(chat=True).bind(load_tokenizer(str(tiny_model_dir)))
    with pytest.raises(ConfigError, match="bind"):
        PromptFormat(chat=True).prompt("Q?")


def test_a_chat_fit_renders_every_prompt_through_the_template(fit_tiny, tiny_model_dir,
                                                              tmp_path):
    """With a template that writes one user turn as the plain format does, the chat fit
    trains and evaluates on the plain fit's tokens: the same history, evaluation for
    evaluation; with SmolLM2's template, its prompts."""
    folder = tmp_path / "tok"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": PLAIN}))
    chat, trainer = fit_tiny([], epochs=2, tokenizer=str(folder),
                             prompt=PromptFormat(chat=True))
    plain, _ = fit_tiny([], epochs=2)
    assert isinstance(trainer.datamodule.fmt, ChatPrompt)
    assert chat.history == plain.history and len(chat.history) == 2
    (folder / "tokenizer_config.json").write_text(json.dumps({**config,
                                                              "chat_template": SMOLLM2}))
    _, trainer = fit_tiny([], epochs=2, tokenizer=str(folder), prompt=PromptFormat(chat=True))
    data = trainer.datamodule
    fact = data.splits["known_train"][0]
    row = data.encoded("known_train")[0]
    assert row["input_ids"][:row["prompt_len"]] == data.tokenizer(
        data.fmt.prompt(fact.question), add_special_tokens=False)["input_ids"]
    assert data.fmt.prompt(fact.question).startswith(SYSTEM)


class LeadingTokenizer:
    """A stand-in for Gemma's tokenizer: one id per character, and BOS (2) before a text
    when special tokens are added."""

    def __call__(self, texts, add_special_tokens: bool = True):
        def ids(text: str) -> list[int]:
            body = [ord(c) for c in text.replace("<bos>", "\x02")]
            return ([2] if add_special_tokens else []) + body
        return {"input_ids": ids(texts) if isinstance(texts, str) else [ids(t) for t in texts]}


def test_prompts_start_with_the_tokenizers_bos_once(tiny_model_dir):
    from halluc_cl.facts.prompts import encode_prompts, leading_ids

    tok = LeadingTokenizer()
    assert leading_ids(tok) == [2]
    assert encode_prompts(tok, ["ab", "<bos>ab"]) == [[2, 97, 98], [2, 97, 98]]
    tiny = load_tokenizer(str(tiny_model_dir))  # adds nothing: prompts are the bare text
    assert leading_ids(tiny) == []
    assert encode_prompts(tiny, ["Answer:"]) == [tiny("Answer:", add_special_tokens=False)[
        "input_ids"]]

"""The Reasoner: saved tiny model folders, the three modes, custom marker tokens, repair, bad inputs."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor

from pangu_core.dual.chat_format import ChatFormat, template_prompts
from pangu_core.dual.reasoner import Answer, Reasoner
from pangu_core.dual.response import ThinkingMarkers
from pangu_core.dual.self_repair import DEFAULT_CONTROL_TEXT, RepairConfig

OPENPANGU = ThinkingMarkers("[unused16]", "[unused17]")


class Scripted(LogitsProcessor):
    """Makes any model write a scripted response per prompt: ``scripts`` maps the rendered prompt's ids
    to a function (response ids so far -> next id)."""

    def __init__(self, scripts, pad_id):
        self.scripts, self.pad_id = scripts, pad_id

    def __call__(self, input_ids, scores):
        forced = torch.full_like(scores, -float("inf"))
        for row, ids in enumerate(input_ids.tolist()):
            while ids and ids[0] == self.pad_id:
                ids = ids[1:]
            (prompt,) = [p for p in self.scripts if tuple(ids[:len(p)]) == p]
            forced[row, self.scripts[prompt](ids[len(prompt):])] = 0.0
        return forced


def ids_of(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def says(tokenizer, text):
    """A script that writes ``text`` and then eos."""
    target = ids_of(tokenizer, text) + [tokenizer.eos_token_id]
    # Rows that are done still get a (discarded) token while others go on.
    return lambda response: target[min(len(response), len(target) - 1)]


def loops(tokenizer, head, line, tail):
    """A script that writes ``head``, then ``line`` over and over until the control text is in the
    response, then ``tail`` and eos."""
    head_ids, line_ids = ids_of(tokenizer, head), ids_of(tokenizer, line)
    control, tail_ids = ids_of(tokenizer, DEFAULT_CONTROL_TEXT), ids_of(tokenizer, tail) + [tokenizer.eos_token_id]

    def next_id(response):
        if len(response) < len(head_ids):
            return head_ids[len(response)]
        text = ",".join(map(str, response))
        if ",".join(map(str, control)) in text:
            after = len(response) - max(i + len(control) for i in range(len(response))
                                        if response[i:i + len(control)] == control)
            return tail_ids[min(after, len(tail_ids) - 1)]
        return line_ids[(len(response) - len(head_ids)) % len(line_ids)]

    return next_id


def scripted(reasoner, mode, scripts):
    texts = template_prompts(reasoner.tokenizer, [(prompt, mode) for prompt in scripts])
    keys = [tuple(ids_of(reasoner.tokenizer, text)) for text in texts]
    return [Scripted(dict(zip(keys, scripts.values())), reasoner.tokenizer.pad_token_id)]


def save_tiny(path, chat_format=ChatFormat()):
    from pangu_core.tasks.model import tiny_pangu
    from pangu_core.tasks.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(chat_format=chat_format)
    tiny_pangu("nano", tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny"))


def test_modes_on_a_saved_tiny_model(tiny_folder, one_torch_thread):
    reasoner = Reasoner.from_pretrained(tiny_folder)
    tok = reasoner.tokenizer
    scripts = {"7+5": says(tok, "<think></think>\\boxed{12}"),
               "47+38": says(tok, "<think>α47 +β38: 7+8=15 4+3+1=8 =γ85\n</think>\\boxed{85}")}
    fast, slow = reasoner.answer(list(scripts), mode="auto", max_new_tokens=60,
                                 logits_processor=scripted(reasoner, "auto", scripts))
    # Empty thinking is the fast mode; tokens count what was generated, eos included.
    assert fast == Answer("12", "", "\\boxed{12}", "fast", "auto", len(ids_of(tok, "<think></think>\\boxed{12}")) + 1,
                          0, True, False, "<think></think>\\boxed{12}")
    assert (slow.final_answer, slow.mode, slow.thinking) == ("85", "slow", "α47 +β38: 7+8=15 4+3+1=8 =γ85")
    # The explicit modes render their tags: the scripts are keyed by the rendered prompt.
    (answer,) = reasoner.answer("7+5", mode="fast", max_new_tokens=60,
                                logits_processor=scripted(reasoner, "fast", {"7+5": scripts["7+5"]}))
    assert (answer.requested, answer.mode, answer.final_answer) == ("fast", "fast", "12")


def test_untrained_model_answers_within_budget(tiny_folder, one_torch_thread):
    # A real (untrained) model: answers in order, deterministic, budget kept, unclosed thinking has no answer.
    reasoner = Reasoner.from_pretrained(tiny_folder)
    prompts = ["7+5", "(47+38)-(19+26)", "1+1"]
    first = reasoner.answer(prompts, mode="slow", max_new_tokens=20, batch_size=2)
    assert first == reasoner.answer(prompts, mode="slow", max_new_tokens=20)
    for answer in first:
        assert 1 <= answer.tokens <= 20 and answer.requested == "slow"
        assert answer.closed or answer.final_answer is None


def test_repair_through_the_reasoner(tiny_folder, one_torch_thread):
    reasoner = Reasoner.from_pretrained(tiny_folder)
    tok = reasoner.tokenizer
    script = {"9+9": loops(tok, "<think>", "α9 +β9 =γ18\n", "</think>\\boxed{18}")}
    line = "α9 +β9 =γ18\n"
    (repaired,) = reasoner.answer("9+9", mode="slow", max_new_tokens=200,
                                  logits_processor=scripted(reasoner, "slow", script))
    # Three copies of the line fire the detector; one stays, the control text follows, the script ends.
    assert repaired.text == "<think>" + line + DEFAULT_CONTROL_TEXT + "</think>\\boxed{18}"
    assert (repaired.repairs, repaired.final_answer, repaired.mode, repaired.looped) == (1, "18", "slow", False)
    n_line = len(ids_of(tok, line))
    assert repaired.tokens == 1 + 3 * n_line + len(ids_of(tok, "</think>\\boxed{18}")) + 1
    (plain,) = reasoner.answer("9+9", mode="slow", max_new_tokens=200, repair=False,
                               logits_processor=scripted(reasoner, "slow", script))
    assert (plain.repairs, plain.looped, plain.closed, plain.final_answer, plain.tokens) == (0, True, False, None, 200)


class OpensFirst(LogitsProcessor):
    """Makes the untrained model open the thinking block as its first token, and leaves it alone after."""

    def __init__(self, open_id, prompt_ids):
        self.open_id, self.width = open_id, max(len(p) for p in prompt_ids)

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] != self.width:
            return scores
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.open_id] = 0.0
        return forced


def test_bias_sets_the_auto_decision(tiny_folder, one_torch_thread):
    # A large bias makes the token after the open marker the close marker (fast); a large negative
    # one forbids it there (the untrained model then writes some thinking: slow).
    reasoner = Reasoner.from_pretrained(tiny_folder)
    prompts = ["7+5", "47+38"]
    opener = [OpensFirst(ids_of(reasoner.tokenizer, "<think>")[0],
                         [ids_of(reasoner.tokenizer, t) for t in template_prompts(reasoner.tokenizer,
                                                                                  [(p, "auto") for p in prompts])])]
    fast = reasoner.answer(prompts, mode="auto", max_new_tokens=8, bias=1e4, logits_processor=opener)
    assert [(a.mode, a.text.startswith("<think></think>")) for a in fast] == [("fast", True)] * 2
    slow = reasoner.answer(prompts, mode="auto", max_new_tokens=8, bias=-1e4, logits_processor=opener)
    assert [(a.mode, a.text.startswith("<think></think>")) for a in slow] == [("slow", False)] * 2
    assert reasoner.fast_probability(["7+5", "47+38"]).shape == (2,)


@pytest.mark.parametrize("prefill", [False, True])
def test_openpangu_style_marker_tokens(tmp_path, prefill, one_torch_thread):
    # A model folder whose thinking markers are other added tokens, and (prefill) whose template
    # writes the empty thinking block itself in fast mode, as Qwen3's does.
    chat = ChatFormat(bos="<s>", user="[unused9]", assistant="[unused10]", end="[unused11]", pad="<pad>",
                      markers=OPENPANGU)
    folder = save_tiny(tmp_path / "pangu", chat)
    if prefill:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        tokenizer.chat_template += ("{%- if add_generation_prompt and messages[-1]['content'].endswith('/no_think') -%}"
                                    "[unused16][unused17]{%- endif -%}")
        tokenizer.save_pretrained(folder)
    reasoner = Reasoner.from_pretrained(folder, markers=OPENPANGU)
    tok = reasoner.tokenizer
    assert len(ids_of(tok, "[unused16]")) == 1 and tok.eos_token == "[unused11]"
    fast_text = "\\boxed{12}" if prefill else "[unused16][unused17]\\boxed{12}"
    scripts = {"7+5": says(tok, fast_text)}
    (answer,) = reasoner.answer("7+5", mode="fast", max_new_tokens=30, logits_processor=scripted(reasoner, "fast", scripts))
    assert (answer.mode, answer.thinking, answer.final_answer) == ("fast", "", "12")
    assert answer.text == "[unused16][unused17]\\boxed{12}"
    slow = {"7+5": says(tok, "[unused16]7+5=12\n[unused17]\\boxed{12}")}
    (answer,) = reasoner.answer("7+5", mode="slow", max_new_tokens=30, logits_processor=scripted(reasoner, "slow", slow))
    assert (answer.mode, answer.thinking, answer.final_answer) == ("slow", "7+5=12", "12")
    probability = reasoner.fast_probability(["7+5"])
    assert 0.0 < probability[0] < 1.0


def test_bad_inputs(tiny_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="path: expected a model directory"):
        Reasoner.from_pretrained(tmp_path / "missing")
    reasoner = Reasoner.from_pretrained(tiny_folder)
    with pytest.raises(ValueError, match=r"mode: expected one of \('slow', 'fast', 'auto'\), got 'quick'"):
        reasoner.answer("1+1", mode="quick")
    with pytest.raises(ValueError, match="max_new_tokens: expected an int >= 1, got 0"):
        reasoner.answer("1+1", max_new_tokens=0)
    with pytest.raises(ValueError, match="bias: only auto mode has a mode decision to bias"):
        reasoner.answer("1+1", mode="slow", bias=1.0)
    with pytest.raises(TypeError, match="prompts: expected a str or a non-empty sequence of str"):
        reasoner.answer([])
    with pytest.raises(TypeError, match="markers: expected ThinkingMarkers, got tuple"):
        Reasoner(reasoner.model, reasoner.tokenizer, markers=("<think>", "</think>"))
    with pytest.raises(ValueError, match=r"markers.close: expected '</t>' to be one token"):
        Reasoner(reasoner.model, reasoner.tokenizer, ThinkingMarkers("<think>", "</t>")).answer("1", bias=1.0)
    with pytest.raises(TypeError, match="repair_config: expected RepairConfig"):
        Reasoner(reasoner.model, reasoner.tokenizer, repair_config=RepairConfig().to_dict())


QWEN_LIKE = ("{%- for m in messages -%}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
             "{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}")


def save_bpe_model(path):
    """A folder with a byte-level BPE tokenizer trained on a few lines (multi-character tokens, the
    thinking markers as special tokens, a ChatML-like template) and a tiny model of its vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from pangu_core.tasks.model import tiny_pangu

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(["What is 7+5? The answer is \\boxed{12}.", "Adding 47 and 38 gives 85.",
                                 "user assistant /no_think /auto_think"] * 3, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        unk_token="<unk>")
    tokenizer.chat_template = QWEN_LIKE
    tiny_pangu("nano", tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_a_bpe_tokenizer_with_its_own_template(tmp_path, one_torch_thread):
    reasoner = Reasoner.from_pretrained(save_bpe_model(tmp_path / "bpe"))
    tok = reasoner.tokenizer
    assert len(ids_of(tok, "The answer is")) < len("The answer is")  # real multi-character tokens
    scripts = {"What is 7+5?": says(tok, "<think></think>The answer is \\boxed{12}."),
               "Add 47 and 38.": says(tok, "<think>Adding 47 and 38 gives 85.</think>\\boxed{85}")}
    fast, slow = reasoner.answer(list(scripts), mode="auto", max_new_tokens=40,
                                 logits_processor=scripted(reasoner, "auto", scripts))
    assert (fast.mode, fast.final_answer, fast.answer) == ("fast", "12", "The answer is \\boxed{12}.")
    assert (slow.mode, slow.final_answer, slow.thinking) == ("slow", "85", "Adding 47 and 38 gives 85.")
    assert fast.tokens == len(ids_of(tok, "<think></think>The answer is \\boxed{12}.")) + 1
    assert reasoner.fast_probability(list(scripts)).shape == (2,)


@pytest.mark.cuda
def test_the_reasoner_on_cuda_matches_cpu(tiny_folder):
    # Device placement: prompts, stopping masks and the selector's gather follow the model's device.
    cpu = Reasoner.from_pretrained(tiny_folder)
    gpu = Reasoner.from_pretrained(tiny_folder, device="cuda")
    tok = cpu.tokenizer
    script = {"9+9": loops(tok, "<think>", "α9 +β9 =γ18\n", "</think>\\boxed{18}")}
    on_cpu = cpu.answer("9+9", mode="slow", max_new_tokens=120, logits_processor=scripted(cpu, "slow", script))
    on_gpu = gpu.answer("9+9", mode="slow", max_new_tokens=120, logits_processor=scripted(gpu, "slow", script))
    assert on_gpu == on_cpu and on_gpu[0].repairs == 1
    assert gpu.fast_probability(["7+5"]) == pytest.approx(cpu.fast_probability(["7+5"]), rel=1e-3)

"""Named chat formats, selectable with ``chat_format=``, for models whose GGUF has no template
(or to override it). Each is a jinja template in the style of its model family, with the
strings that end an assistant turn and the markers that open or close any turn: a reply stops
at those too, because a model that never learnt the format writes them as plain text (a base
model continues with a made-up next turn)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ChatFormat:
    template: str
    stop: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()  # what opens or closes a turn; never part of a reply

    @property
    def stops(self) -> list[str]:
        return list(dict.fromkeys(self.stop + self.markers))


FORMATS: dict[str, ChatFormat] = {
    "chatml": ChatFormat(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        ("<|im_end|>",), ("<|im_start|>", "<|im_end|>")),
    "llama-2": ChatFormat(
        "{% if messages and messages[0].role == 'system' %}{% set system = messages[0].content %}"
        "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
        "{% for m in messages %}{% if m.role == 'user' %}{{ bos_token }}[INST] "
        "{% if loop.first and system %}<<SYS>>\n{{ system }}\n<</SYS>>\n\n{% endif %}{{ m.content | trim }} [/INST]"
        "{% elif m.role == 'assistant' %} {{ m.content | trim }} {{ eos_token }}{% endif %}{% endfor %}",
        ("</s>",), ("[INST]",)),
    "llama-3": ChatFormat(
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
        "{{ m.content | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
        ("<|eot_id|>",), ("<|start_header_id|>", "<|eot_id|>")),
    "mistral-instruct": ChatFormat(
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]"
        "{% elif m.role == 'assistant' %}{{ m.content }}{{ eos_token }}"
        "{% elif m.role == 'system' %}[INST] {{ m.content }} [/INST]{% endif %}{% endfor %}",
        ("</s>",), ("[INST]",)),
    "gemma": ChatFormat(
        "{{ bos_token }}{% for m in messages %}{% set role = 'model' if m.role == 'assistant' else 'user' %}"
        "<start_of_turn>{{ role }}\n{{ m.content | trim }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
        ("<end_of_turn>",), ("<start_of_turn>", "<end_of_turn>")),
    "phi-3": ChatFormat(
        "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
        ("<|end|>", "<|endoftext|>"), ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")),
    "alpaca": ChatFormat(
        "{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}\n\n"
        "{% elif m.role == 'user' %}### Instruction:\n{{ m.content }}\n\n"
        "{% elif m.role == 'assistant' %}### Response:\n{{ m.content }}\n\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}### Response:\n{% endif %}",
        ("###",), ("### Instruction:", "### Response:")),
    "vicuna": ChatFormat(
        "{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}\n\n"
        "{% elif m.role == 'user' %}USER: {{ m.content }}\n{% elif m.role == 'assistant' %}ASSISTANT: "
        "{{ m.content }}{{ eos_token }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}",
        ("USER:",), ("USER:", "ASSISTANT:")),
    "zephyr": ChatFormat(
        "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{{ eos_token }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
        ("</s>",), ("<|system|>", "<|user|>", "<|assistant|>")),
    # functionary v1: functions as a TypeScript namespace; the model answers with text or
    # "to=functions.NAME:" followed by the JSON arguments (see pyllama.chat.tools)
    "functionary": ChatFormat(
        "{% if tools %}SYSTEM: // Supported function definitions that should be called when necessary.\n"
        "namespace functions {\n{% for tool in tools %}{% set f = tool.function %}"
        "// {{ f.description | default('') }}\ntype {{ f.name }} = (_: {{ f.parameters | tojson }}) => any;\n\n"
        "{% endfor %}} // namespace functions\n{% endif %}"
        "{% for m in messages %}{% if m.role == 'system' %}SYSTEM: {{ m.content }}\n"
        "{% elif m.role == 'user' %}USER: {{ m.content }}\n"
        "{% elif m.role == 'tool' %}FUNCTION RESULT {{ m.name | default('') }}: {{ m.content }}\n"
        "{% elif m.role == 'assistant' %}ASSISTANT: {% if m.tool_calls %}{% for c in m.tool_calls %}"
        "to=functions.{{ c.function.name }}:\n{{ c.function.arguments }}{% endfor %}{% else %}{{ m.content }}"
        "{% endif %}\n{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}",
        ("USER:", "\nSYSTEM:")),
}
FORMATS["qwen"] = FORMATS["chatml"]
FORMATS["mistral"] = FORMATS["mistral-instruct"]
FORMATS["llama-3.1"] = FORMATS["llama-3"]


def get_format(name: str) -> ChatFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown chat_format {name!r}; known: {', '.join(sorted(FORMATS))} and llama.cpp's "
                         "built-in names (pyllama.chat.builtin.builtin_names())") from None

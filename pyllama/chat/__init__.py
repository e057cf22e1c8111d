"""Chat: templates, named formats, tool calling, JSON-schema output and ChatSession."""

from .completion import chat_template, create_chat_completion
from .formats import FORMATS, ChatFormat
from .json_schema import SchemaError, schema_to_gbnf
from .template import ChatTemplate, ChatTemplateError
from .tools import ToolCall, parse_tool_calls

__all__ = [
    "FORMATS",
    "ChatFormat",
    "ChatTemplate",
    "ChatTemplateError",
    "SchemaError",
    "ToolCall",
    "chat_template",
    "create_chat_completion",
    "parse_tool_calls",
    "schema_to_gbnf",
]

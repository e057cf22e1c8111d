"""Chat: templates, named formats, tool calling, JSON-schema output; planning a chat request and shaping its reply."""

from .completion import ChatChunker, ChatPlan, chat_chunks, chat_header, chat_response, plan_chat
from .formats import FORMATS, ChatFormat
from .json_schema import SchemaError, schema_to_gbnf
from .template import ChatTemplate, ChatTemplateError, chat_template
from .tools import ToolCall, parse_tool_calls

__all__ = [
    "FORMATS",
    "ChatChunker",
    "ChatFormat",
    "ChatPlan",
    "ChatTemplate",
    "ChatTemplateError",
    "SchemaError",
    "ToolCall",
    "chat_chunks",
    "chat_header",
    "chat_response",
    "chat_template",
    "parse_tool_calls",
    "plan_chat",
    "schema_to_gbnf",
]

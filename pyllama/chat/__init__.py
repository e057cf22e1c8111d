"""Chat: templates, named formats, tool calling, JSON-schema output; planning a chat request and shaping its reply."""

from ..errors import ChatTemplateError, SchemaError
from .formats import FORMATS, ChatFormat
from .json_schema import schema_to_gbnf
from .model_template import chat_template
from .plan import ChatPlan, plan_chat
from .reply import ChatChunker, chat_chunks, chat_header, chat_response
from .template import ChatTemplate
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

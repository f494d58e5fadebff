"""One adapter per wire API; each API's quirks live in its own module."""

from gateway.adapters.base import Adapter
from gateway.adapters.chat import ChatCompletions
from gateway.adapters.messages import CountTokens, Messages
from gateway.adapters.responses import Responses

CHAT = ChatCompletions()
MESSAGES = Messages()
COUNT_TOKENS = CountTokens()
RESPONSES = Responses()

__all__ = ["CHAT", "COUNT_TOKENS", "MESSAGES", "RESPONSES", "Adapter"]

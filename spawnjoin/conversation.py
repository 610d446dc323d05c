"""Chat conversations as text contexts (ChatML), so the scheduler and traces stay string-based.

A thread whose model speaks chat completions keeps its context as ChatML text::

    <|im_start|>system
    You can delegate ...<|im_end|>
    <|im_start|>user
    What is ...?<|im_end|>
    <|im_start|>assistant
    Let me think

A final assistant message without `<|im_end|>` is *open*: the chat backend asks the server to continue it
(`continue_final_message`). Chat backends parse the text back into messages with `parse_chatml`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["ChatMessage", "render_chatml", "parse_chatml", "is_chatml", "IM_START", "IM_END"]

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

Role = Literal["system", "user", "assistant"]


class ChatMessage(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str


def render_chatml(messages: list[ChatMessage], *, open_assistant: bool = True) -> str:
    """ChatML text of `messages`; with `open_assistant`, an open assistant message follows unless the last
    message is already an (open) assistant message."""
    parts = []
    for i, m in enumerate(messages):
        last = i == len(messages) - 1
        if last and m.role == "assistant" and open_assistant:
            parts.append(f"{IM_START}assistant\n{m.content}")
            return "".join(parts)
        parts.append(f"{IM_START}{m.role}\n{m.content}{IM_END}\n")
    if open_assistant:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


def is_chatml(text: str) -> bool:
    """Whether `text` is a ChatML conversation (starts with `<|im_start|>`)."""
    return text.startswith(IM_START)


def parse_chatml(text: str) -> tuple[list[ChatMessage], bool]:
    """Messages of a ChatML text, and whether the last one is an open assistant message to continue.

    Text that is not ChatML is one user message. Unknown roles raise `ValueError`.
    """
    if not is_chatml(text):
        return [ChatMessage(role="user", content=text)], False
    messages: list[ChatMessage] = []
    open_last = False
    for block in text.split(IM_START)[1:]:
        header, _, body = block.partition("\n")
        role = header.strip()
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"unknown chat role {role!r} in ChatML context")
        if body.endswith(IM_END + "\n"):
            content, open_last = body[: -len(IM_END) - 1], False
        elif body.endswith(IM_END):
            content, open_last = body[: -len(IM_END)], False
        else:
            content, open_last = body, True
        messages.append(ChatMessage(role=role, content=content))  # type: ignore[arg-type]
    if open_last and messages[-1].role != "assistant":
        raise ValueError("only an assistant message may be left open in a ChatML context")
    return messages, open_last

#!/usr/bin/env python3
"""Talks to `lowra serve` through the official `openai` client (PyPI): the model list, a chat
completion and a text completion, each whole and streamed. Prints one JSON object with what came
back, for the test that runs it (Tests/LowRATests/ServeTests.swift).

Usage: openai_client_check.py BASE_URL MODEL PROMPT MAX_TOKENS
"""
import json
import sys

from openai import OpenAI


def main() -> None:
    base_url, model, prompt, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
    models = [m.id for m in client.models.list().data]
    messages = [{"role": "user", "content": prompt}]
    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)
    chat_stream = ""
    usage = None
    for chunk in client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        for choice in chunk.choices:
            chat_stream += choice.delta.content or ""
    text = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0)
    text_stream = "".join(
        c.choices[0].text
        for c in client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True)
        if c.choices
    )
    try:
        client.chat.completions.create(model="no-such-adapter", messages=messages, max_tokens=4)
        missing = None
    except Exception as e:  # the client raises NotFoundError for a 404
        missing = type(e).__name__
    print(json.dumps({
        "models": models,
        "chat": chat.choices[0].message.content,
        "chat_finish": chat.choices[0].finish_reason,
        "chat_usage": chat.usage.completion_tokens,
        "chat_stream": chat_stream,
        "chat_stream_usage": usage,
        "text": text.choices[0].text,
        "text_stream": text_stream,
        "missing": missing,
    }))


if __name__ == "__main__":
    main()

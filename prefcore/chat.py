"""The one chat template used for sampling, training and judging, applied the same way everywhere.

A prompt is either a string (one user turn) or a list of {"role", "content"} messages. Prompt token ids come
from the tokenizer's chat template with the generation prompt added; a response is its text's tokens followed
by the end-of-turn (EOS) token, so chosen and rejected share exactly the same prompt ids.
"""
from __future__ import annotations

Prompt = str | list


def to_messages(prompt: Prompt) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if not prompt or not all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        raise ValueError("a chat prompt must be a non-empty list of {role, content} messages")
    return list(prompt)


def prompt_token_ids(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of the prompt as the model sees it right before it answers."""
    messages = to_messages(prompt)
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    text = "\n".join(m["content"] for m in messages) + "\n"
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def response_token_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a response: its text, then exactly one EOS (never doubled, even if the text carries one)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    while ids and ids[-1] == eos:
        ids = ids[:-1]
    return ids + ([eos] if eos is not None else [])


def prompt_text(prompt: Prompt) -> str:
    """A readable rendering of a prompt, for pages and exports."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)

"""A chat agent for the OpenAI-compatible API (docs/openai.md): reads the conversation (the
messages as 'role: content' paragraphs) and answers the last user message, deterministically
and word by word, slowly enough that a streamed completion shows it arriving."""

import re
import sys
import time

PACE_S = 0.05  # between words
ROLES = ("system", "developer", "user", "assistant", "tool")
# A message starts each paragraph that begins with `role: `. Inside a message, runyard has put
# one more backslash in front of each line that begins with backslashes, a role and a colon
# (any case), so a caller's content never reads as a message of its own: undone here.
_START = re.compile(rf"\n\n(?=(?:{'|'.join(ROLES)}): )")
_BREAK = r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]"
_ESCAPED = re.compile(rf"(?<={_BREAK})\\(?=\\*(?:{'|'.join(ROLES)}):)", re.IGNORECASE | re.ASCII)


def messages(conversation: str) -> list[tuple[str, str]]:
    """(role, content) of each message, as the caller sent it."""
    if not conversation:
        return []
    found = []
    for paragraph in _START.split(conversation):
        role, _, content = paragraph.partition(": ")
        found.append((role, _ESCAPED.sub("", content)))
    return found


def last_user_message(conversation: str) -> str:
    said = [content for role, content in messages(conversation) if role == "user"]
    return said[-1].strip() if said else ""


def main() -> None:
    question = last_user_message(sys.argv[1])
    words = f"You said: {question}".split(" ")
    for i, word in enumerate(words):
        sys.stdout.write(word if i == 0 else " " + word)
        sys.stdout.flush()
        time.sleep(PACE_S)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

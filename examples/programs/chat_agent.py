"""A chat agent for the OpenAI-compatible API (docs/openai.md): reads the conversation (the
messages as 'role: content' paragraphs) and answers the last user message, deterministically
and word by word, slowly enough that a streamed completion shows it arriving."""

import sys
import time

PACE_S = 0.05  # between words


def last_user_message(conversation: str) -> str:
    said = ""
    for paragraph in conversation.split("\n\n"):
        if paragraph.startswith("user: "):
            said = paragraph.removeprefix("user: ")
        elif said and not paragraph.startswith(
            ("system: ", "developer: ", "assistant: ", "tool: ")
        ):
            said += "\n\n" + paragraph  # a user message with blank lines of its own
    return said.strip()


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

"""The Tunix SFT trainer (issue 6). Placeholder until it lands."""


def load_trainers() -> list:
    return []

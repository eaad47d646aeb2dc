"""Command trainers (issue 2). Placeholder until it lands."""


def load_command_trainers() -> list:
    return []

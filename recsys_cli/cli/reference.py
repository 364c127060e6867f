"""The CLI reference (every command, argument and option) generated from the Typer app.

``python -m recsys_cli.cli.reference`` prints the Markdown that the README embeds between the
``<!-- cli-reference:start -->`` and ``<!-- cli-reference:end -->`` markers; a test keeps them equal.
"""

from __future__ import annotations

import inspect

import typer

START = "<!-- cli-reference:start -->"
END = "<!-- cli-reference:end -->"


def _literal(text: str) -> str:
    """Help text as the terminal shows it: without the escapes that keep rich from eating brackets."""
    return text.replace("\\[", "[")


def _param_row(param) -> str:
    if param.param_type_name == "argument":
        name = f"`{(param.metavar or param.name or '').upper()}`"
        kind = "argument" + (" (repeatable)" if param.nargs == -1 else "")
    else:
        names = [*param.opts, *param.secondary_opts]
        name = ", ".join(f"`{n}`" for n in names)
        kind = "flag" if getattr(param, "is_flag", False) else ("option (repeatable)" if param.multiple else "option")
    default = getattr(param.default, "value", param.default)  # an Enum choice shows its value
    is_flag = bool(getattr(param, "is_flag", False))
    if callable(default) or default in (None, (), []) or (is_flag and default is False):
        shown = ""
    else:
        shown = f"`{default}`"
    text = _literal(" ".join((getattr(param, "help", None) or "").split())).replace("|", "\\|")
    return f"| {name} | {kind} | {shown} | {text} |"


def _command_section(path: str, command) -> str:
    doc = _literal(inspect.cleandoc(command.help or ""))
    params = [p for p in command.params if p.name not in ("help",)]
    rows = "\n".join(_param_row(p) for p in params)
    table = f"\n\n| name | kind | default | meaning |\n|---|---|---|---|\n{rows}" if rows else ""
    return f"### `recsys {path}`\n\n{doc}{table}"


def reference() -> str:
    from recsys_cli.cli.app import app

    group = typer.main.get_command(app)
    sections = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            for sub_name, sub in command.commands.items():
                sections.append(_command_section(f"{name} {sub_name}", sub))
        else:
            sections.append(_command_section(name, command))
    return "\n\n".join(sections) + "\n"


def sync_readme(path: str = "README.md") -> bool:
    """Rewrite the generated CLI and config blocks of the README; True if anything changed."""
    from pathlib import Path

    from recsys_cli.config import reference as config_reference

    readme = Path(path)
    text = old = readme.read_text(encoding="utf-8")
    for start, end, body in ((START, END, reference()), (config_reference.START, config_reference.END,
                                                          config_reference.reference())):
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = f"{head}{start}\n{body}{end}{tail}"
    if text != old:
        readme.write_text(text, encoding="utf-8")
    return text != old


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--write"]:
        changed = sync_readme(sys.argv[2] if len(sys.argv) > 2 else "README.md")
        print("README updated" if changed else "README already up to date", file=sys.stderr)
    else:
        print(reference(), end="")

"""Shell completion scripts for bash and zsh, generated from the argument parser so they never drift."""

from __future__ import annotations

import argparse


def commands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, list[str], list[str]]]:
    """Sub-command -> (help, its options, the choices of its first positional argument, if any)."""
    found: dict[str, tuple[str, list[str], list[str]]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                options = sorted(o for a in sub._actions for o in a.option_strings if o.startswith("--"))
                positional = next((a for a in sub._actions if not a.option_strings and a.dest != "help"), None)
                choices = [str(c) for c in positional.choices] if positional is not None and positional.choices else []
                found[name] = (helps.get(name, ""), options, choices)
    return found


def bash(parser: argparse.ArgumentParser) -> str:
    found = commands(parser)
    cases = "\n".join(
        f'    {name}) words="{" ".join(choices + options)}" ;;' for name, (_, options, choices) in sorted(found.items())
    )
    return f"""# gridctl bash completion: eval "$(gridctl completion bash)" (e.g. in ~/.bashrc)
_gridctl() {{
  local cur=${{COMP_WORDS[COMP_CWORD]}} cmd="" words="" i
  for ((i = 1; i < COMP_CWORD; i++)); do
    case ${{COMP_WORDS[i]}} in -*) ;; *) cmd=${{COMP_WORDS[i]}}; break ;; esac
  done
  if [ -z "$cmd" ]; then
    COMPREPLY=($(compgen -W "{" ".join(sorted(found))} --help --version" -- "$cur"))
    return
  fi
  case $cmd in
{cases}
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
  if [ "$cmd" = submit ] && [[ $cur != -* ]]; then
    COMPREPLY+=($(compgen -f -- "$cur"))
  fi
}}
complete -F _gridctl gridctl
"""


def zsh(parser: argparse.ArgumentParser) -> str:
    found = commands(parser)
    quote = "'\\''"  # a ' inside zsh's single quotes
    described = "\n".join(f"    '{name}:{help.replace(chr(39), quote)}'" for name, (help, _, _) in sorted(found.items()))
    cases = "\n".join(
        f"    {name}) compadd -- {' '.join(choices + options)} ;;" for name, (_, options, choices) in sorted(found.items())
    )
    return f"""#compdef gridctl
# gridctl zsh completion: gridctl completion zsh > "${{fpath[1]}}/_gridctl" (or eval "$(gridctl completion zsh)")
_gridctl() {{
  local -a cmds
  cmds=(
{described}
  )
  if (( CURRENT == 2 )); then
    _describe 'command' cmds
    return
  fi
  case $words[2] in
{cases}
  esac
  [[ $words[2] == submit ]] && _files
}}
compdef _gridctl gridctl 2>/dev/null || true
"""

"""``hs config init``, ``validate``, ``path`` and ``reload``."""


import os
from pathlib import Path
from typing import Annotated

import typer

from hotswapd.host.paths import CONFIG_ENV, resolve_config_path

app = typer.Typer(help="Write, check and locate the config file; apply it now.", no_args_is_help=True)


@app.command()
def init(
    ctx: typer.Context,
    path: Annotated[str | None, typer.Argument(help="Where to write it (default: the file the daemon reads).", metavar="[PATH]")] = None,
    stdout: Annotated[bool, typer.Option("--stdout", help="Print it instead of writing a file.")] = False,
) -> None:
    """Write the starter config: every key with its default, and two versions of the bundled
    model (v1 sentence-transformers, v2 ONNX int8) to switch between. It is what the daemon
    serves when there is no file; an existing file is never overwritten.

    Example: hs config init && hs config path
    """
    from hotswapd.config.schema import starter_text
    from hotswapd.errors import ConfigError

    text = starter_text()
    if stdout:
        if path:
            raise typer.BadParameter("--stdout prints the starter; give no PATH with it", param_hint="'--stdout'")
        typer.echo(text, nl=False)
        return
    target = Path(path).expanduser() if path else resolve_config_path(ctx.obj.config)
    if str(target).startswith("ssm:"):
        raise ConfigError(f"{target}: hs config init writes files only; put the --stdout output into the parameter")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "x", encoding="utf-8") as handle:  # "x": never over a file already there
            handle.write(text)
    except FileExistsError:
        what = "a directory" if target.is_dir() else ("a link to nothing" if target.is_symlink() and not target.exists() else "a file")
        raise ConfigError(f"{target} already exists ({what}); it was left as it is (hs config init --stdout prints the starter)") from None
    except OSError as exc:
        raise ConfigError(f"{target}: cannot write: {exc.strerror or exc}") from None
    typer.echo(f"wrote {target}: model minilm, versions v1 (sentence-transformers) and v2 (ONNX int8); try: hs switch minilm v2")


@app.command()
def validate(
    ctx: typer.Context,
    path: Annotated[str | None, typer.Argument(help="Config file or ssm:/PARAMETER (default: the one the daemon reads).", metavar="[PATH]")] = None,
) -> None:
    """Check a config: TOML syntax, schema, and that every source and embeddings file exists.

    Example: hs config validate ~/.config/hotswapd/config.toml
    """
    # Imported here: pydantic is needed by this command only.
    from hotswapd.config.http_keys import load_keys
    from hotswapd.config.origin import origin_for
    from hotswapd.errors import ConfigError, ModelLoadError
    from hotswapd.sources.resolve import check_source

    spec = path or ctx.obj.config or os.environ.get(CONFIG_ENV)
    default_path = resolve_config_path(None)
    # A file named here must exist; the default location may be empty, as the daemon then
    # serves the built-in default, which is what is checked.
    origin = origin_for(spec, default_path, missing_ok=spec is None)
    config = origin.load()
    target = origin.name
    if spec is None and not default_path.exists():
        target = f"{default_path} (no such file: the built-in default, which the daemon serves)"
    problems = []
    for name, model in config.models.items():
        for version, spec in model.versions.items():
            try:
                if spec.source is not None:  # an ensemble has members instead
                    check_source(spec.source, config.base_dir)
            except ModelLoadError as exc:
                problems.append(f"models.{name}.versions.{version}.source: {exc.message}")
            except (OSError, ValueError) as exc:  # a name too long, a path the system refuses
                problems.append(f"models.{name}.versions.{version}.source: {type(exc).__name__}: {str(exc)[:200]}")
            if spec.embeddings_path and not _exists(config.base_dir / spec.embeddings_path):
                problems.append(f"models.{name}.versions.{version}.embeddings_path: {spec.embeddings_path} does not exist")
    if config.http.api_keys_file or config.http.api_keys_env:
        try:
            load_keys(config.http, config.base_dir)  # the daemon's own checks: owner-only file, lengths
        except ConfigError as exc:
            problems.append(exc.message)
    if problems:
        raise ConfigError(f"{target}: " + "; ".join(problems))
    versions = sum(len(model.versions) for model in config.models.values())
    typer.echo(f"{target}: ok ({_count(len(config.models), 'model')}, {_count(versions, 'version')})")


@app.command()
def path(ctx: typer.Context) -> None:
    """Print the config file the daemon reads, and where that choice came from.

    Example: hs config path
    """
    settings = ctx.obj
    target = resolve_config_path(settings.config)
    origin = {"commandline": "--config", "environment": CONFIG_ENV}.get(settings.config_origin, "default")
    if str(settings.config or os.environ.get(CONFIG_ENV, "")).startswith("ssm:"):
        target, state = settings.config or os.environ[CONFIG_ENV], "an SSM Parameter Store parameter, polled"
    else:
        state = "exists" if target.exists() else "missing: the built-in default model is served"
    typer.echo(f"{target}  ({origin}; {state})")


@app.command()
def reload(ctx: typer.Context) -> None:
    """Make the daemon re-read its config now (as SIGHUP does); a bad file changes nothing.

    Example: hs config reload
    """
    result = ctx.obj.client().reload_config()
    labels = (("switching", "switching"), ("reloaded", "reloaded"), ("removed", "removed"), ("refreshed", "changed on disk"))
    parts = [f"{label}: {', '.join(result[key])}" for key, label in labels if result.get(key)]
    typer.echo("config applied" + (f" ({'; '.join(parts)})" if parts else ""))
    if result.get("restart_needed"):
        typer.echo(f"takes effect on the next start: {', '.join(result['restart_needed'])}", err=True)
    failed = result.get("failed") or {}
    if failed:
        # Applied, except these: what served them before still does.
        typer.echo("not applied: " + "; ".join(f"{name}: {why}" for name, why in sorted(failed.items())), err=True)
        raise typer.Exit(1)


def _exists(path: object) -> bool:
    try:
        return path.exists()  # type: ignore[attr-defined,no-any-return]
    except (OSError, ValueError):
        return False


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"

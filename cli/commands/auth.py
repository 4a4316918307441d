"""``sygmax auth rotate-keys``: add a JWT signing key (the newest signs, every key verifies)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.output import console, fail, load_or_fail

app = typer.Typer(help="Authentication keys.", no_args_is_help=True)


@app.command("rotate-keys")
def rotate_keys(
    keep: int = typer.Option(0, "--keep", min=0, help="Afterwards keep only the newest N keys (0: keep all). Keep "
                                                      "the previous key at least auth.access_token_ttl_s so tokens "
                                                      "it signed expire naturally."),
) -> None:
    """Add a new Ed25519 signing key to auth.keys_dir; running processes pick it up within seconds."""
    from sygmax.auth.keys import KeyDirectoryError, add_key, read_keys

    settings, _ = load_or_fail()
    directory = Path(settings.auth.keys_dir)
    if keep == 1:
        fail("--keep 1 would drop the key that signed every live access token; use --keep 2 or more "
             "(or 0 to keep all)")
    try:
        new, removed = add_key(directory, keep)
        keys = read_keys(directory)
    except (OSError, KeyDirectoryError) as exc:
        fail(f"cannot write a key to {directory} (auth.keys_dir): {exc}")
    console.print(f"[green]new signing key[/] {new.kid} ({new.path})", highlight=False)
    for path in removed:
        console.print(f"removed {path}", highlight=False)
    console.print(f"{len(keys)} key(s) verify tokens: {', '.join(key.kid for key in keys)}", highlight=False)

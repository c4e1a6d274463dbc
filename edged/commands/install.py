"""Install edged as a service: a venv under /opt/edged, /usr/local/bin/edged, the systemd unit, /etc/edged/cell.toml.

Only the standard library is used, so ``python3 -m edged.commands.install`` works from a source tree
before any dependency is installed (``make install`` does that). ``--uninstall`` removes the program,
the link and the unit, and keeps the config (/etc/edged) and the spool (/var/lib/edged).
"""
from __future__ import annotations

import argparse
import grp
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2]  # the source tree (setup.py, systemd/, config/)
CONFIG_MODE = 0o640
GROUP = "edged"  # the unit's SupplementaryGroups=: it may read /etc/edged/cell.toml (0640 root:edged)


@dataclass(frozen=True)
class Layout:
    """Where everything goes below a root (DESTDIR) and prefix."""

    root: Path
    prefix: str = "/"

    def path(self, absolute: str) -> Path:
        """An absolute install path placed below root (the prefix applies to /opt, /usr and /etc alike)."""
        rel = Path(self.prefix.lstrip("/")) / absolute.lstrip("/")
        return self.root / rel

    def target(self, absolute: str) -> str:
        """The path as the installed system sees it (without the root): what links and units point at."""
        return str(Path("/") / self.prefix.lstrip("/") / absolute.lstrip("/"))

    @property
    def venv(self) -> Path:
        """The venv (/opt/edged)."""
        return self.path("/opt/edged")

    @property
    def link(self) -> Path:
        """The /usr/local/bin/edged link."""
        return self.path("/usr/local/bin/edged")

    @property
    def unit(self) -> Path:
        """The systemd unit."""
        return self.path("/etc/systemd/system/edged.service")

    @property
    def config_dir(self) -> Path:
        """/etc/edged."""
        return self.path("/etc/edged")

    @property
    def config(self) -> Path:
        """/etc/edged/cell.toml."""
        return self.config_dir / "cell.toml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edged install`."""
    p.add_argument("--destdir", default=os.environ.get("DESTDIR", ""), metavar="DIR",
                   help="install below this root instead of / (packaging and tests; default $DESTDIR)")
    p.add_argument("--prefix", default="/", help="prefix of every installed path (default /)")
    p.add_argument("--source", default=str(SOURCE), metavar="DIR", help="edged source tree to pip-install")
    p.add_argument("--python", default=sys.executable, help="python that creates the venv (default: this one)")
    p.add_argument("--system-site-packages", action="store_true",
                   help="let the venv see the system's packages (faster when they are already there)")
    p.add_argument("--skip-pip", action="store_true",
                   help="create the venv without pip-installing edged into it (tests; the link then dangles)")
    p.add_argument("--uninstall", action="store_true",
                   help="remove the program, link and unit; keep /etc/edged and the spool")


def install(lay: Layout, source: Path, python: str, system_site: bool = False, skip_pip: bool = False) -> list[str]:
    """Install everything; returns the lines to print (what was done and the systemctl commands)."""
    out: list[str] = []
    venv_cmd = [python, "-m", "venv"] + (["--system-site-packages"] if system_site else []) \
        + (["--without-pip"] if skip_pip else []) + [str(lay.venv)]
    subprocess.run(venv_cmd, check=True)
    out.append(f"venv: {lay.venv}")
    if not skip_pip:
        pip = [str(lay.venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["--upgrade", "pip", "setuptools==84.2.1", "wheel", "cython==3.3.1"], check=True)
        subprocess.run(pip + ["--no-build-isolation", str(source)], check=True)
        out.append(f"installed edged from {source}")
    lay.link.parent.mkdir(parents=True, exist_ok=True)
    if lay.link.is_symlink() or lay.link.exists():
        lay.link.unlink()
    lay.link.symlink_to(lay.target("/opt/edged/bin/edged"))
    out.append(f"link: {lay.link} -> {lay.target('/opt/edged/bin/edged')}")
    lay.unit.parent.mkdir(parents=True, exist_ok=True)
    unit = (source / "systemd" / "edged.service").read_text()
    if lay.prefix.strip("/"):
        unit = unit.replace("/usr/local/bin/edged", lay.target("/usr/local/bin/edged")) \
            .replace("/etc/edged/", lay.target("/etc/edged") + "/")
    lay.unit.write_text(unit)
    lay.unit.chmod(0o644)
    out.append(f"unit: {lay.unit}")
    lay.config_dir.mkdir(parents=True, exist_ok=True)
    lay.config_dir.chmod(0o750)
    gid = _group_id(create=not str(lay.root).strip("/"))
    if lay.config.exists():
        out.append(f"config: {lay.config} exists, left as it is")
    else:
        fd = os.open(lay.config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, CONFIG_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write((source / "config" / "example-cell.toml").read_bytes())
        os.chmod(lay.config, CONFIG_MODE)  # not widened or narrowed by the umask
        out.append(f"config: {lay.config} created from the example (mode 0640)")
    if gid is not None and os.geteuid() == 0:
        os.chown(lay.config_dir, 0, gid)
        os.chown(lay.config, -1, gid)
        out.append(f"config: {lay.config_dir} and cell.toml belong to group {GROUP} (the service's group)")
    cell = lay.target("/etc/edged/cell.toml")
    out += ["", "Next steps:",
            f"  edit {cell}, then check it:   {lay.target('/usr/local/bin/edged')} check -c {cell}",
            f"  restrict the service to the cell's addresses: "
            f"{lay.target('/usr/local/bin/edged')} systemd-dropin -c {cell} --write",
            "  systemctl daemon-reload",
            "  systemctl enable --now edged",
            "  systemctl status edged        # or: edged status -c " + cell,
            "  systemctl reload edged        # after editing the cell file"]
    return out


def uninstall(lay: Layout) -> list[str]:
    """Remove the venv, the link, the unit and its drop-ins; keep the config and the spool."""
    out = []
    if lay.link.is_symlink() or lay.link.exists():
        lay.link.unlink()
        out.append(f"removed {lay.link}")
    if lay.venv.exists():
        shutil.rmtree(lay.venv)
        out.append(f"removed {lay.venv}")
    dropins = lay.unit.with_name("edged.service.d")
    for p in (lay.unit,):
        if p.exists():
            p.unlink()
            out.append(f"removed {p}")
    if dropins.exists():
        shutil.rmtree(dropins)
        out.append(f"removed {dropins}")
    out += [f"kept {lay.target('/etc/edged')} (config) and /var/lib/edged (spool)", "",
            "Then: systemctl daemon-reload"]
    return out


def _group_id(create: bool) -> int | None:
    """The gid of the edged group; created (as a system group) when installing into the real root as root."""
    try:
        return grp.getgrnam(GROUP).gr_gid
    except KeyError:
        pass
    if create and os.geteuid() == 0 and shutil.which("groupadd"):
        subprocess.run(["groupadd", "--system", GROUP], check=False)
        try:
            return grp.getgrnam(GROUP).gr_gid
        except KeyError:
            return None
    return None


def run(args: argparse.Namespace) -> int:
    """Install or uninstall; prints what was done and the systemctl commands."""
    lay = Layout(Path(args.destdir or "/"), args.prefix)
    if args.uninstall:
        lines = uninstall(lay)
    else:
        source = Path(args.source)
        if not (source / "systemd" / "edged.service").is_file():
            print(f"edged install: {source} is not an edged source tree (no systemd/edged.service); "
                  f"pass --source", file=sys.stderr)
            return 2
        lines = install(lay, source, args.python, args.system_site_packages, args.skip_pip)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="edged-install", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))

"""The Debian package of the major under test installs into a clean root of its Debian release
(no Rust, no compiler: only what the package's Depends and Recommends pull from the mirror),
and a hook -> delivery round trip works there with the log sink."""

import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import PG_MAJOR, REPO, free_port, seed

RELEASE = {15: "bookworm", 17: "trixie"}[PG_MAJOR]
CACHE = Path("/var/cache/mysmshook")
MIRROR = "http://deb.debian.org/debian"


def sh(*args, **kwargs):
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def clean_root():
    """Debian's minimal base system of the release, made once and cached."""
    base = CACHE / f"clean-{RELEASE}"
    if not (base / ".ready").exists():
        shutil.rmtree(base, ignore_errors=True)
        base.parent.mkdir(parents=True, exist_ok=True)
        if not shutil.which("debootstrap"):
            sh("sh", "-c", "apt-get update -qq && apt-get install -y -qq debootstrap")
        sh("debootstrap", "--variant=minbase", RELEASE, str(base), MIRROR)
        (base / ".ready").touch()
    return base


@pytest.mark.slow
@pytest.mark.every_major
def test_the_package_installs_on_a_clean_debian_and_delivers(tmp_path):
    [deb] = sh(str(REPO / "scripts" / "package.sh"), str(PG_MAJOR)).split()
    deb = REPO / deb
    assert deb.name == f"postgresql-{PG_MAJOR}-mysmshook_{deb.name.split('_')[1]}_amd64.deb"
    fields = sh("dpkg-deb", "--field", str(deb), "Depends", "Recommends")
    assert f"Depends: postgresql-{PG_MAJOR}, libc6 (>= " in fields
    assert f"Recommends: postgresql-{PG_MAJOR}-cron" in fields

    root = tmp_path / "root"
    sh("cp", "-a", str(clean_root()), str(root))
    sh("mount", "-t", "proc", "proc", str(root / "proc"))
    # The host's devices, read-only: nothing done in the root can remove them.
    sh("mount", "--bind", "/dev", str(root / "dev"))
    sh("mount", "-o", "remount,bind,ro", str(root / "dev"))
    port = free_port()
    bin_dir = f"/usr/lib/postgresql/{PG_MAJOR}/bin"
    try:
        shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
        shutil.copy(deb, root / "tmp" / deb.name)
        # policy-rc.d: the server package must not start its own cluster inside the root.
        (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
        (root / "usr/sbin/policy-rc.d").chmod(0o755)
        sh("chroot", str(root), "sh", "-c",
           f"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp/{deb.name}")
        for tool in ["cargo", "rustc", "cc", "gcc", "clang"]:
            assert not shutil.which(tool, path=f"{root}/usr/bin:{root}/usr/local/bin"), f"{tool} in the clean root"
        assert (root / f"usr/lib/postgresql/{PG_MAJOR}/lib/pg_cron.so").exists()  # Recommends

        data = "/tmp/cluster"
        sh("chroot", str(root), "sh", "-c",
           f"mkdir -p {data} && chown postgres {data} && "
           f"runuser -u postgres -- {bin_dir}/initdb -D {data} -U postgres -A trust >/dev/null && "
           f"cat >> {data}/postgresql.conf <<CONF\n"
           f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '/tmp'\n"
           "shared_preload_libraries = 'pg_cron'\ncron.database_name = 'postgres'\n"
           "cron.use_background_workers = on\nmysmshook.log_sink = on\nCONF\n"
           f"runuser -u postgres -- {bin_dir}/pg_ctl -D {data} -l {data}/log -w start >/dev/null")
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute("create extension pg_cron")
            conn.execute("create extension mysmshook")
            event = seed("sms_auth.json")
            (answer,) = conn.execute("select mysmshook.send_sms(%s)", (Jsonb(event),)).fetchone()
            assert answer == {}
            conn.execute("call mysmshook.run_worker()")
            (status, provider) = conn.execute("select status, provider from mysmshook.job_queue").fetchone()
            assert (status, provider) == ("completed", "log")
            (cron_job,) = conn.execute("select mysmshook.schedule()").fetchone()
            assert cron_job > 0
        time.sleep(0.2)
        assert "mysmshook log provider" in (root / "tmp/cluster/log").read_text(errors="replace")
    finally:
        subprocess.run(["chroot", str(root), "runuser", "-u", "postgres", "--",
                        f"{bin_dir}/pg_ctl", "-D", "/tmp/cluster", "-m", "immediate", "stop"], capture_output=True)
        mounted = []
        for mount in ["proc", "dev"]:
            subprocess.run(["umount", str(root / mount)], capture_output=True)
            if subprocess.run(["mountpoint", "-q", str(root / mount)]).returncode == 0:
                mounted.append(mount)
        if not mounted:  # never delete through a mount of the host's /dev or /proc
            shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_the_worker_package_installs_on_a_clean_debian_and_delivers(tmp_path, cluster, db, mock):
    """mysmshook-worker's package in a clean root of the release: its own system user, a
    settings file only that user can read, a systemd unit that restarts it on failure; run as
    that user against the suite's cluster, it delivers and stops cleanly on SIGTERM."""
    from conftest import use_webhook, enqueue_many, status_counts

    [deb] = sh(str(REPO / "scripts" / "package.sh"), "worker").split()
    deb = REPO / deb
    assert sh("dpkg-deb", "--field", str(deb), "Depends").startswith("libc6 (>= ")
    root = tmp_path / "root"
    sh("cp", "-a", str(clean_root()), str(root))
    sh("mount", "-t", "proc", "proc", str(root / "proc"))
    sh("mount", "--bind", "/dev", str(root / "dev"))
    sh("mount", "-o", "remount,bind,ro", str(root / "dev"))
    db.execute("drop role if exists courier_packaged")
    db.execute("create role courier_packaged login")
    db.execute("select mysmshook.grant_worker_access('courier_packaged', remote => true)")
    use_webhook(db, mock.url, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    worker = None
    try:
        shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
        shutil.copy(deb, root / "tmp" / deb.name)
        sh("chroot", str(root), "sh", "-c",
           f"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp/{deb.name}")
        for tool in ["cargo", "rustc", "cc", "gcc"]:
            assert not shutil.which(tool, path=f"{root}/usr/bin:{root}/usr/local/bin"), f"{tool} in the clean root"
        assert "mysmshook:" in (root / "etc/passwd").read_text()
        assert sh("chroot", str(root), "stat", "-c", "%U:%G %a", "/etc/mysmshook/worker.env").split() == ["root:mysmshook", "640"]
        unit = (root / "usr/lib/systemd/system/mysmshook-worker.service").read_text()
        for line in ["User=mysmshook", "EnvironmentFile=/etc/mysmshook/worker.env",
                     "ExecStart=/usr/bin/mysmshook-worker", "Restart=on-failure"]:
            assert line in unit, line
        # As systemd would start it: the user, the environment file's variables.
        (root / "etc/mysmshook/worker.env").write_text(
            f"MYSMSHOOK_DATABASE_URL=postgres://courier_packaged@127.0.0.1:{cluster.port}/postgres?sslmode=disable\n"
            "MYSMSHOOK_ALLOW_HTTP_LOOPBACK=true\n")
        worker = subprocess.Popen(
            ["chroot", str(root), "runuser", "-u", "mysmshook", "--", "sh", "-c",
             "set -a && . /etc/mysmshook/worker.env && exec /usr/bin/mysmshook-worker"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        enqueue_many(db, 3)
        deadline = time.monotonic() + 30
        while status_counts(db) != {"completed": 3} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status_counts(db) == {"completed": 3}
        assert mock.count() == 3
    finally:
        if worker is not None:
            subprocess.run(["pkill", "-TERM", "-f", "^/usr/bin/mysmshook-worker"])
            out, _ = worker.communicate(timeout=30)
            assert worker.returncode == 0, out
        db.execute("drop owned by courier_packaged")
        db.execute("drop role courier_packaged")
        mounted = []
        for mount in ["proc", "dev"]:
            subprocess.run(["umount", str(root / mount)], capture_output=True)
            if subprocess.run(["mountpoint", "-q", str(root / mount)]).returncode == 0:
                mounted.append(mount)
        if not mounted:
            shutil.rmtree(root, ignore_errors=True)

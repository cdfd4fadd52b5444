# shellcheck shell=bash
# Shared by scripts/test, scripts/demo and scripts/fuzz-api: find or install what a fresh Debian
# machine lacks.
# Source it after setting `install` (1: may install with apt-get, 0: only check).

die() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }
run() { printf '+ %s\n' "$*"; "$@"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root to run: $*"
    fi
}

apt_updated=0
apt_install() {
    [ "${install:-1}" -eq 1 ] || die "missing: $* (run without --no-install, or install it yourself)"
    command -v apt-get >/dev/null 2>&1 || die "missing: $*, and no apt-get here: install it yourself"
    if [ "$apt_updated" -eq 0 ]; then
        run as_root apt-get update -q
        apt_updated=1
    fi
    run as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" </dev/null
}

# The directory with initdb and pg_ctl, found as the test harness finds it (test-support's
# cluster.rs): APP_METRICS_PG_BIN, else PATH, else the newest /usr/lib/postgresql/*/bin.
pg_bin_dir() {
    if [ -n "${APP_METRICS_PG_BIN:-}" ]; then
        [ -x "$APP_METRICS_PG_BIN/initdb" ] && echo "$APP_METRICS_PG_BIN"
        return 0
    fi
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    local dir
    dir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
    return 0
}

# Makes sure PostgreSQL server binaries (and, as root, a way to drop privileges for them) exist;
# sets pg_bin.
ensure_postgres() {
    if [ -z "$(pg_bin_dir)" ]; then
        # Debian's package puts the server binaries in /usr/lib/postgresql/<major>/bin, where the
        # harness looks; its postinst may also start a system cluster on 5432, which we do not use.
        apt_install postgresql
        [ -n "$(pg_bin_dir)" ] || die "PostgreSQL installed, but initdb/pg_ctl still not found"
    fi
    pg_bin=$(pg_bin_dir)
    # The migrations use UNIQUE NULLS NOT DISTINCT (PostgreSQL 15). An older server would only
    # fail later, in the middle of the tests or the demo.
    local major
    major=$("$pg_bin/pg_ctl" --version | sed -n 's/.* \([0-9][0-9]*\)[.0-9]*.*$/\1/p' | head -n 1)
    if [ -n "$major" ] && [ "$major" -lt 15 ]; then
        die "PostgreSQL $major found in $pg_bin; app-metrics needs 15 or newer (set APP_METRICS_PG_BIN to a newer bin directory, or install the PostgreSQL 15+ packages)"
    fi
    if [ "$(id -u)" -eq 0 ] && ! command -v runuser >/dev/null 2>&1 && ! command -v setpriv >/dev/null 2>&1; then
        apt_install util-linux # the harness runs the cluster as an unprivileged user through these
    fi
}

# The browser the browser tests drive (test-support's browser.rs looks in the same places):
# APP_METRICS_CHROMIUM, else /usr/bin/chromium, else `chromium` on PATH. Prints its path.
chromium_path() {
    if [ -n "${APP_METRICS_CHROMIUM:-}" ]; then
        [ -x "$APP_METRICS_CHROMIUM" ] && echo "$APP_METRICS_CHROMIUM"
        return 0
    fi
    if [ -x /usr/bin/chromium ]; then
        echo /usr/bin/chromium
    elif command -v chromium >/dev/null 2>&1; then
        command -v chromium
    fi
    return 0
}

# Makes sure a Chromium for the browser tests exists (Debian's `chromium` package); sets
# chromium_bin. A browser test without one fails rather than skips, so this fails early with
# the same advice.
ensure_chromium() {
    if [ -n "${APP_METRICS_CHROMIUM:-}" ] && [ -z "$(chromium_path)" ]; then
        die "APP_METRICS_CHROMIUM=$APP_METRICS_CHROMIUM is not an executable; unset it to use Debian's chromium"
    fi
    if [ -z "$(chromium_path)" ]; then
        [ "${install:-1}" -eq 1 ] ||
            die "chromium not found: the browser tests need it (apt-get install chromium, or set APP_METRICS_CHROMIUM); run without --no-install to install it"
        apt_install chromium
        [ -n "$(chromium_path)" ] || die "chromium installed, but /usr/bin/chromium is still missing"
    fi
    chromium_bin=$(chromium_path)
}

# The schemathesis that scripts/fuzz-api runs, with everything it needs pinned in
# scripts/fuzz/requirements.txt (PyPI's packages), in a virtual environment of its own at $1
# (under the cargo target directory, so `cargo clean` drops it); sets schemathesis_bin. A venv
# installed from another requirements file is installed again. Needs Python >= 3.11 with venv
# (Debian: python3, python3-venv).
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
    local venv=$1 python requirements=scripts/fuzz/requirements.txt
    schemathesis_bin="$venv/bin/schemathesis"
    if [ -x "$schemathesis_bin" ] && cmp -s "$requirements" "$venv/requirements.txt" &&
        [ "$("$schemathesis_bin" --version 2>/dev/null)" = "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
        return 0
    fi
    [ "${install:-1}" -eq 1 ] ||
        die "schemathesis $SCHEMATHESIS_VERSION (as pinned in $requirements) not found in $venv: the API fuzz (scripts/fuzz-api) needs it; run without --no-install to install it there (python3 -m venv, pip install -r $requirements)"
    python=$(command -v python3 || true)
    if [ -z "$python" ] || ! "$python" -c 'import ensurepip, sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        apt_install python3 python3-venv
        python=$(command -v python3 || true)
        [ -n "$python" ] && "$python" -c 'import ensurepip, sys, venv; sys.exit(sys.version_info < (3, 11))' ||
            die "schemathesis $SCHEMATHESIS_VERSION needs Python >= 3.11 with venv; python3 is $("$python" --version 2>&1)"
    fi
    run "$python" -m venv --clear "$venv"
    run "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    [ "$("$schemathesis_bin" --version 2>/dev/null)" = "schemathesis, version $SCHEMATHESIS_VERSION" ] ||
        die "schemathesis $SCHEMATHESIS_VERSION did not install into $venv (is $requirements pinned to it?)"
    cp "$requirements" "$venv/requirements.txt"
}

# Shared helpers for the scripts in this folder. Sourced, not run.

# need_pkgs CMD:PKG ... — installs each Debian package whose command is
# missing. Fails (never skips) when a package cannot be installed.
need_pkgs() {
    local missing=()
    for pair in "$@"; do
        local cmd="${pair%%:*}" pkg="${pair#*:}"
        if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
            missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}" >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "error: need root or sudo to install ${missing[*]}" >&2; return 1; }
        sudo="sudo"
    fi
    $sudo apt-get update -qq || { echo "error: apt-get update failed" >&2; return 1; }
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null \
        || { echo "error: could not install ${missing[*]}" >&2; return 1; }
    for pair in "$@"; do
        local cmd="${pair%%:*}"
        if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
            echo "error: $cmd still missing after installing its package" >&2
            return 1
        fi
    done
}

# need_build_deps — what building vdh-edge needs beyond Rust: protoc and the
# well-known protos for etcd-client's build script.
need_build_deps() {
    need_pkgs protoc:protobuf-compiler
    if [ ! -f /usr/include/google/protobuf/descriptor.proto ]; then
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        echo "installing: libprotobuf-dev" >&2
        $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libprotobuf-dev >/dev/null \
            || { echo "error: could not install libprotobuf-dev" >&2; return 1; }
    fi
}

# need_rust_components — rustfmt and clippy, which a minimal rustup profile
# leaves out; installed with rustup when missing.
need_rust_components() {
    local missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v rustup >/dev/null 2>&1 || { echo "error: ${missing[*]} missing and no rustup to install them" >&2; return 1; }
    echo "installing: ${missing[*]} (rustup)" >&2
    rustup component add "${missing[@]}" || { echo "error: could not install ${missing[*]}" >&2; return 1; }
}

# need_openapi_validator — a Python with openapi-spec-validator and
# openapi-schema-validator (the OpenAPI 3.1 checks of the test suite).
# Uses python3 when it has them; otherwise makes a venv in
# target/openapi-venv and installs them from PyPI. Exports
# VDH_TEST_PYTHON for the tests.
need_openapi_validator() {
    local probe='import openapi_spec_validator, openapi_schema_validator, referencing'
    if python3 -c "$probe" 2>/dev/null; then
        export VDH_TEST_PYTHON=python3
        return 0
    fi
    local venv="target/openapi-venv"
    if [ ! -x "$venv/bin/python3" ] || ! "$venv/bin/python3" -c "$probe" 2>/dev/null; then
        python3 -m venv "$venv" 2>/dev/null || { need_pkgs python3:python3 && need_pkgs_pkg python3-venv && python3 -m venv --clear "$venv"; } \
            || { echo "error: could not make a Python venv" >&2; return 1; }
        echo "installing: openapi-spec-validator (PyPI, into $venv)" >&2
        "$venv/bin/pip" install -q "openapi-spec-validator>=0.7" "openapi-schema-validator>=0.6" \
            || { echo "error: could not install openapi-spec-validator" >&2; return 1; }
    fi
    VDH_TEST_PYTHON="$(pwd)/$venv/bin/python3"
    export VDH_TEST_PYTHON
}

# need_pkgs_pkg PKG — installs a Debian package that has no command to probe.
need_pkgs_pkg() {
    dpkg -s "$1" >/dev/null 2>&1 && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing: $1" >&2
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$1" >/dev/null \
        || { echo "error: could not install $1" >&2; return 1; }
}

# descendants PID: every child process of PID, recursively.
descendants() { local c; for c in $(pgrep -P "$1" || true); do echo "$c"; descendants "$c"; done; }

# cpu_ns PID: scheduler run time (ns) of PID's threads and its children's
# (/proc/PID/task/*/schedstat: what the scheduler clock records, not ticks).
cpu_ns() {
    local total=0 p t
    for p in $1 $(descendants "$1"); do
        for t in /proc/$p/task/*/schedstat; do
            [ -r "$t" ] && total=$((total + $(cut -d' ' -f1 "$t")))
        done
    done
    echo $total
}

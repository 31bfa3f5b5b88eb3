# r2a-appliance: `make images` builds the reference cluster's role images, `make test` runs
# every test (unit, golden, CLI, and real image builds from the Debian mirror), as root.

CARGO    ?= cargo
MANIFEST ?= examples/reference-cluster.toml
OUT      ?= out
CACHE    ?= .cache
SUDO     := $(if $(filter 0,$(shell id -u)),,sudo)

# Host tools the builder and the tests run (`r2a-image build` names them when missing):
# bootstrap, disk images (GPT, FAT, ext4), squashfs and ISO, and QEMU with OVMF, SeaBIOS
# and iPXE for `r2a-image boot`. GRUB is not among them: the build installs it from the
# image's own Debian release into a layer of its own and runs it there.
HOST_PACKAGES := mmdebstrap debootstrap arch-test apt-utils util-linux coreutils dpkg xorriso \
                 tar gzip ca-certificates time bc systemd-container iproute2 \
                 fdisk dosfstools mtools e2fsprogs squashfs-tools \
                 qemu-system-x86 ovmf seabios ipxe-qemu openssh-client python3 python3-venv
# The tests check every SBOM with an independent SPDX validator, the spdx-tools Python
# package, kept in a virtual environment of its own under target/.
SPDX_TOOLS         := target/spdx-tools
SPDX_TOOLS_VERSION := 0.8.5

# qemu-system-x86 needs qemu-utils of its own release: on Debian 12 hosts that carry the
# backported qemu-utils, the release's own is installed with it (a downgrade).
QEMU_UTILS := $(shell . /etc/os-release 2>/dev/null; \
                if [ "$$VERSION_CODENAME" = bookworm ]; then echo qemu-utils/bookworm; else echo qemu-utils; fi)

# Where `make install` puts the binaries, roles/ and overlays/, the man pages and the
# shell completions (DESTDIR stages them for a package).
PREFIX  ?= /usr/local
DESTDIR ?=
ROOT    := $(DESTDIR)$(PREFIX)

.PHONY: all deps build images test lint bench install clean

all: build

deps:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		--allow-downgrades $(HOST_PACKAGES) $(QEMU_UTILS)
	test -x $(SPDX_TOOLS)/bin/pyspdxtools || { /usr/bin/python3 -m venv $(SPDX_TOOLS) && \
		$(SPDX_TOOLS)/bin/pip install --quiet --disable-pip-version-check spdx-tools==$(SPDX_TOOLS_VERSION); }

build:
	$(CARGO) build --release --locked

images: deps build
	$(SUDO) ./target/release/r2a-image build $(MANIFEST) --out $(OUT) --cache $(CACHE)

test: deps lint
	$(SUDO) env "PATH=$$PATH" $(CARGO) test --release --locked

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings

bench: deps build
	$(SUDO) ./bench/run.sh

install: build
	install -d $(ROOT)/bin $(ROOT)/share/r2a-appliance $(ROOT)/share/man/man1 \
		$(ROOT)/share/bash-completion/completions $(ROOT)/share/zsh/site-functions \
		$(ROOT)/share/fish/vendor_completions.d
	install -m 0755 target/release/r2a-image target/release/r2a-node $(ROOT)/bin/
	cp -R roles overlays $(ROOT)/share/r2a-appliance/
	./target/release/r2a-image man $(ROOT)/share/man/man1 > /dev/null
	./target/release/r2a-image completions bash > $(ROOT)/share/bash-completion/completions/r2a-image
	./target/release/r2a-image completions zsh > $(ROOT)/share/zsh/site-functions/_r2a-image
	./target/release/r2a-image completions fish > $(ROOT)/share/fish/vendor_completions.d/r2a-image.fish

clean:
	$(CARGO) clean
	rm -rf $(OUT)

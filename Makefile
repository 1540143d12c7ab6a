# Convenience targets. The test command is ./scripts/test (CI calls it too).
.PHONY: test deb system-test demo clean-deb docs

test:
	./scripts/test

# Builds target/deb/iocomd_<version>_<arch>.deb (xz members) with debhelper.
deb:
	./scripts/build-deb

# End-to-end test on a real systemd (root): builds the package, boots a Debian 12 container
# with systemd-nspawn, installs iocomd with apt and pushes updates with iocomctl.
system-test:
	tests/system/run

# The demo device (builds iocomd, iocomctl and the helper first; see scripts/demo).
demo:
	./scripts/demo

# Shell completions (bash, zsh, fish) and manual pages in target/docs (also in the .deb).
docs:
	./scripts/docs

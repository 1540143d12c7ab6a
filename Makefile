# Convenience targets. The test command is ./scripts/test (CI calls it too).
.PHONY: test deb demo clean-deb

test:
	./scripts/test

# Builds target/deb/iocomd_<version>_<arch>.deb (xz members) with debhelper.
deb:
	./scripts/build-deb

demo:
	cargo run --release -p iocomd --bin iocomd -- --demo

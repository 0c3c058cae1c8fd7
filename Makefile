# The two README commands: `make demo` (set up, then run the main job) and
# `make test` (set up, then run every test).  `make setup` installs what the
# project needs (Debian packages, npm packages) and builds dist/.
.PHONY: setup build demo test bench clean

setup:
	bash scripts/setup.sh

build:
	npm run build

demo: setup
	bash scripts/demo.sh

test: setup
	bash scripts/test.sh

bench: setup
	node dist/perf/benchmark.js

clean:
	rm -rf dist coverage

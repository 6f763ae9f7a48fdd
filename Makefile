# Two commands do everything: `make run` and `make test`. See README.md.
.PHONY: run test stop install services screenshots

run:
	@scripts/run.sh

test:
	@scripts/test.sh

# Stops what this checkout's `make run` left behind: web, workers and beat (through the honcho whose pid run.sh
# wrote in var/honcho.pid), then PostgreSQL and Redis (by their pid files in var/). Another checkout's are left alone.
stop:
	@-scripts/run.sh stop
	@scripts/services.sh stop

install:
	@scripts/bootstrap.sh --dev

services:
	@scripts/services.sh start

# Renews docs/screens/ (the README's and docs/tour.md's screenshots) from the screen tests.
screenshots:
	@scripts/screenshots.sh

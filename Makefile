# Two commands do everything: `make run` and `make test`. See README.md.
.PHONY: run test stop install services

run:
	@scripts/run.sh

test:
	@scripts/test.sh

# Stops what a `make run` left behind: web, workers, beat, PostgreSQL and Redis.
stop:
	@-pkill -f "honcho start -f Procfile" 2>/dev/null; pkill -f "celery -A concord worker" 2>/dev/null; pkill -f "celery -A concord beat" 2>/dev/null; pkill -f "manage.py runserver" 2>/dev/null; true
	@scripts/services.sh stop

install:
	@scripts/bootstrap.sh --dev

services:
	@scripts/services.sh start

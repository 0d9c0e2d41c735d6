SHELL := /bin/bash
MODULES := pkg

.PHONY: test test-deps chdb
test: test-deps ## run every test on both ClickHouse engines
	@for m in $(MODULES); do (cd $$m && go test -count=1 ./...) || exit 1; done

test-deps: ## install what tests need: clickhouse-server (apt) and libchdb.so
	@scripts/install-test-deps.sh

chdb: ## fetch the embedded ClickHouse library into the user cache, once
	@scripts/fetch-chdb.sh

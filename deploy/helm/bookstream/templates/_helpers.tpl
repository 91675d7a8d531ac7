{{/* Chart name, possibly overridden. */}}
{{- define "bookstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name prefix: <release>-bookstream, or <release> when it already holds the name. */}}
{{/* 40, not 63: suffixes (-redis-headless, -operator...) are added to it, and a
StatefulSet's name must leave room for its pods' revision-hash label. */}}
{{- define "bookstream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "bookstream.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bookstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object the chart makes; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "bookstream.labels" -}}
helm.sh/chart: {{ include "bookstream.chart" .ctx }}
{{ include "bookstream.selectorLabels" . }}
app.kubernetes.io/part-of: bookstream
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end -}}

{{- define "bookstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bookstream.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* <repository>:<tag>, tag defaulting to appVersion; call with (dict "ctx" $ "image" .Values.images.x). */}}
{{- define "bookstream.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "bookstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "bookstream.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bookstream.redisName" -}}
{{- printf "%s-redis" (include "bookstream.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bookstream.redisSecretName" -}}
{{- default (include "bookstream.redisName" .) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{- define "bookstream.redisSecretKey" -}}
{{- if .Values.redis.auth.existingSecret -}}{{ .Values.redis.auth.existingSecretKey }}{{- else -}}password{{- end -}}
{{- end -}}

{{/* The chart Redis' URL, reachable from any namespace. */}}
{{- define "bookstream.redisUrl" -}}
{{- printf "redis://%s.%s.svc:6379" (include "bookstream.redisName" .) .Release.Namespace -}}
{{- end -}}

{{/* The chart Redis' password: given, else kept from the existing Secret, else generated. */}}
{{- define "bookstream.redisPassword" -}}
{{- if .Values.redis.auth.password -}}
{{- .Values.redis.auth.password -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "bookstream.redisName" .) -}}
{{- if and $existing $existing.data (hasKey $existing.data "password") -}}
{{- index $existing.data "password" | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Restricted pod security for containers the chart runs. */}}
{{- define "bookstream.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}


{{/* What the operator does inside a namespace it watches (operator/README.md "RBAC"). */}}
{{- define "bookstream.operatorNamespacedRules" -}}
# Exactly the requests the operator makes (tests/operator/test_operator_kmock.py records them).
# The custom resource: watch it, read it fresh before each pass, patch its annotations
# (kopf's progress) and its status.
- apiGroups: [bookstream.io]
  resources: [libraryinstances]
  verbs: [get, list, watch, patch]
- apiGroups: [bookstream.io]
  resources: [libraryinstances/status]
  verbs: [patch]
# The owned objects carry ownerReferences with blockOwnerDeletion: true, which the API server
# admits only from a client that may update the owner's finalizers (OpenShift enforces it).
- apiGroups: [bookstream.io]
  resources: [libraryinstances/finalizers]
  verbs: [update]
# The objects it owns for each LibraryInstance: server-side apply (patch; create when absent),
# and the StatefulSets read back for readiness. No delete: they carry the LibraryInstance as
# owner, so Kubernetes' garbage collector removes them with it.
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create, patch]
# Kubernetes events about what it did (core/v1).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* Reading the Redis credentials Secret a LibraryInstance names: only ever in a namespaced
Role (a namespace the operator watches or one listed in operator.secretNamespaces), never in
the ClusterRole. get only, never list or watch; the operator also requires the Secret's label
bookstream.io/redis-credentials=true (RBAC cannot), operator/README.md "Which Secrets the
operator reads". */}}
{{- define "bookstream.operatorSecretRules" -}}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end -}}

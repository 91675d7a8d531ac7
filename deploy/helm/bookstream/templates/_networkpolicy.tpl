{{/* The namespaces where libraries run (workers, CLI pods): the release's, the operator's
watched ones and networkPolicy.libraryNamespaces. In no other namespace may a pod reach the
chart's Redis. */}}
{{- define "bookstream.libraryNamespaces" -}}
{{- concat (list .Release.Namespace) .Values.operator.watchNamespaces .Values.networkPolicy.libraryNamespaces | uniq | toJson -}}
{{- end -}}

{{/* bookstream pods of the given components (a list). */}}
{{- define "bookstream.componentSelector" -}}
matchLabels:
  app.kubernetes.io/name: bookstream
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values: {{ toJson . }}
{{- end -}}

{{/* Egress to Redis (the chart's and/or networkPolicy.externalRedis; without the chart's, any
address on the Redis port unless externalRedis.to says where) and to the cluster DNS: all a
worker or a CLI pod may reach. */}}
{{- define "bookstream.redisAndDnsEgress" -}}
{{- if .Values.redis.enabled }}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Release.Namespace }}
      podSelector:
        matchLabels:
          {{- include "bookstream.selectorLabels" (dict "ctx" . "component" "redis") | nindent 10 }}
  ports:
    - {protocol: TCP, port: 6379}
{{- end }}
{{- $external := .Values.networkPolicy.externalRedis }}
{{- if or $external.to (not .Values.redis.enabled) }}
- to:
    {{- if $external.to }}
    {{- toYaml $external.to | nindent 4 }}
    {{- else }}
    - ipBlock: {cidr: 0.0.0.0/0}
    - ipBlock: {cidr: "::/0"}
    {{- end }}
  ports:
    - {protocol: TCP, port: {{ $external.port }}}
{{- end }}
- to:
    - namespaceSelector:
        {{- toYaml .Values.networkPolicy.dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml .Values.networkPolicy.dns.podSelector | nindent 8 }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}

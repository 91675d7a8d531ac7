{{/* The chart Redis' redis.conf. No password in it: every user, the admin ("default") one
included, is in the aclfile (Redis ignores requirepass when it has one). */}}
{{- define "bookstream.redisConf" -}}
bind * -::*
port 6379
dir /data
appendonly yes
appendfsync {{ .Values.redis.appendfsync }}
save ""
# A library is a system of record: when full, refuse writes (workers back off and retry)
# rather than evict a loan or an outcome.
maxmemory {{ .Values.redis.maxmemory }}
maxmemory-policy noeviction
# No value over 1 MB (the least Redis allows; bookstream's largest is under 100 KB): a role
# that may append (a client's submission) cannot make Redis or a reader copy a huge one.
proto-max-bulk-len 1mb
# A connection that does not read its replies (or asks for far more than it reads) is
# closed past 64 MB, or 32 MB for a minute, rather than holding Redis's memory.
client-output-buffer-limit normal 64mb 32mb 60
# On the data volume: the role users `bookstream setup` saves (ACL SAVE) survive restarts.
aclfile /data/users.acl
{{- end -}}

{{/* Run before redis-server at every start: (re)writes the admin user's line of the aclfile
from the mounted Secret and keeps every other user. */}}
{{- define "bookstream.redisAdminUserScript" -}}
# usage: admin-user.sh PASSWORD_FILE ACL_FILE
set -eu
password=$(cat "$1")
case "$password" in
  "" | *[[:space:]]*)
    echo "the Redis admin password ($1) is empty or holds whitespace" >&2
    exit 1 ;;
esac
# The file gets the password's hash, as ACL SAVE writes it. printf is a shell builtin: the
# password is in no process' arguments.
hash=$(printf '%s' "$password" | sha256sum | cut -d ' ' -f 1)
{
  echo "user default on #$hash ~* &* +@all"
  if [ -f "$2" ]; then grep -v '^user default ' "$2" || true; fi
} > "$2.new"
mv "$2.new" "$2"
{{- end -}}

{{/* What redis-server reads at start, but the admin password: its config, the admin script,
and which Secret and key hold the password. Nothing derived from the password itself, not
even a hash: whoever may view the StatefulSet could test guesses against it offline (a new
admin password needs `kubectl rollout restart`, deploy/README.md). */}}
{{- define "bookstream.redisConfigChecksum" -}}
{{- $config := dict
  "conf" (include "bookstream.redisConf" .)
  "script" (include "bookstream.redisAdminUserScript" .)
  "secret" (include "bookstream.redisSecretName" .)
  "key" (include "bookstream.redisSecretKey" .)
-}}
{{- toJson $config | sha256sum | trunc 16 | quote -}}
{{- end -}}

{{/* The admin password's Secret as a volume: one file, "password", readable by the pod's
group only (fsGroup). */}}
{{- define "bookstream.redisAdminVolume" -}}
secret:
  secretName: {{ include "bookstream.redisSecretName" . }}
  items:
    - key: {{ include "bookstream.redisSecretKey" . }}
      path: password
  defaultMode: 288  # 0440
{{- end -}}

{{/* The library the chart provisions (the setup Job) and wires its pods to. */}}
{{- define "bookstream.library" -}}
{{- (.Values.libraryInstance.spec).library | default "main" -}}
{{- end -}}

{{/* One Redis ACL user per role of a library, as `bookstream setup --acl` names them. */}}
{{- define "bookstream.roles" -}}
lending shelving client viewer operator
{{- end -}}

{{- define "bookstream.redisUser" -}}
{{- printf "bs-%s-%s" (include "bookstream.library" .ctx) .role -}}
{{- end -}}

{{- define "bookstream.usersSecretName" -}}
{{- default (printf "%s-users" (include "bookstream.redisName" .)) .Values.redis.auth.existingUsersSecret -}}
{{- end -}}

{{/* The role passwords: each kept from the existing Secret, else generated (once: lookup
finds it on every upgrade). */}}
{{- define "bookstream.usersSecretData" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "bookstream.usersSecretName" .) -}}
{{- $data := (($existing | default dict).data | default dict) -}}
{{- range $role := splitList " " (include "bookstream.roles" .) }}
{{ $role }}: {{ index $data $role | default (randAlphaNum 32 | b64enc) | quote }}
{{- end -}}
{{- end -}}

{{/* A pod's Redis credentials as one role of the chart's library: the user in a variable,
the password in a file (never in an argument or a literal variable). Call with (dict "ctx" $
"role" "client"); the pod mounts "bookstream.roleVolume" at /etc/bookstream/redis. */}}
{{- define "bookstream.roleEnv" -}}
- name: BOOKSTREAM_REDIS_URL
  value: {{ include "bookstream.redisUrl" .ctx | quote }}
- name: BOOKSTREAM_LIBRARY
  value: {{ include "bookstream.library" .ctx | quote }}
- name: BOOKSTREAM_REDIS_USER
  value: {{ include "bookstream.redisUser" . | quote }}
- name: BOOKSTREAM_REDIS_PASSWORD_FILE
  value: /etc/bookstream/redis/password
{{- end -}}

{{- define "bookstream.roleVolume" -}}
secret:
  secretName: {{ include "bookstream.usersSecretName" .ctx }}
  items:
    - key: {{ .role }}
      path: password
  defaultMode: 288  # 0440, readable through the pod's fsGroup
{{- end -}}

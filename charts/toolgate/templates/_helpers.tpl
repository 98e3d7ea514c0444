{{/* The labels of every object. */}}
{{- define "toolgate.labels" -}}
app.kubernetes.io/part-of: toolgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* The controller's selector (immutable in a Deployment: keep it as config/manager had it). */}}
{{- define "toolgate.controllerSelector" -}}
app.kubernetes.io/name: toolgate-controller
{{- end }}

{{/* The controller's objects' labels. */}}
{{- define "toolgate.controllerLabels" -}}
{{ include "toolgate.controllerSelector" . }}
{{ include "toolgate.labels" . }}
{{- end }}

{{/* The toolgate image reference. */}}
{{- define "toolgate.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The Redis Sentinel or Cluster addresses, comma-separated, after checking that one Redis at most is set. */}}
{{- define "toolgate.redisAddrs" -}}
{{- $r := .Values.redis -}}
{{- $set := 0 -}}
{{- if $r.url }}{{ $set = add1 $set }}{{ end -}}
{{- if $r.sentinel.addrs }}{{ $set = add1 $set }}{{ end -}}
{{- if $r.cluster.addrs }}{{ $set = add1 $set }}{{ end -}}
{{- if gt $set 1 }}{{ fail "redis: set one of url, sentinel.addrs and cluster.addrs" }}{{ end -}}
{{- if and $r.sentinel.addrs (not $r.sentinel.masterName) }}{{ fail "redis.sentinel.masterName: name the master the Sentinels monitor (sentinel monitor NAME ...)" }}{{ end -}}
{{- if and $r.sentinel.masterName (not $r.sentinel.addrs) }}{{ fail "redis.sentinel.addrs: list the Sentinels' HOST:PORT" }}{{ end -}}
{{- join "," (concat $r.sentinel.addrs $r.cluster.addrs) -}}
{{- end }}

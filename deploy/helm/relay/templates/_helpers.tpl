{{/* Chart name, truncated for label values. */}}
{{- define "relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, with the chart name unless it contains it.
Release "relay" gives relay-ingest, relay-fanout, relay-nats (as k8s/). */}}
{{- define "relay.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object; pass (dict "root" $ "component" "ingest"). */}}
{{- define "relay.labels" -}}
helm.sh/chart: {{ include "relay.chart" .root }}
{{ include "relay.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: relay
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels; pass (dict "root" $ "component" "ingest"). */}}
{{- define "relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "relay.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "relay.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/* RELAY_NATS_URL: the configured URL, else the bundled NATS Service. */}}
{{- define "relay.natsURL" -}}
{{- if .Values.config.common.RELAY_NATS_URL }}
{{- .Values.config.common.RELAY_NATS_URL }}
{{- else if .Values.nats.enabled }}
{{- printf "nats://%s-nats:4222" (include "relay.fullname" .) }}
{{- else }}
{{- fail "nats.enabled is false: set config.common.RELAY_NATS_URL to your NATS servers" }}
{{- end }}
{{- end }}

{{/* The port number at the end of a listen address like ":8080". */}}
{{- define "relay.port" -}}
{{- $p := regexFind "[0-9]+$" (toString .) }}
{{- if not $p }}
{{- fail (printf "cannot find a port in address %q" (toString .)) }}
{{- end }}
{{- $p }}
{{- end }}

{{/* Ingest listener ports (JSON list) from RELAY_INGEST_LISTENERS. */}}
{{- define "relay.ingest.listenerPorts" -}}
{{- $ls := .Values.config.ingest.RELAY_INGEST_LISTENERS | default ":7070=default/line,:7071=*/line" }}
{{- $ports := list }}
{{- range $l := splitList "," $ls }}
{{- $l = trim $l }}
{{- if $l }}
{{- $ports = append $ports (include "relay.port" (first (splitList "=" $l)) | atoi) }}
{{- end }}
{{- end }}
{{- toJson $ports }}
{{- end }}

{{- define "relay.ingest.httpPort" -}}
{{- include "relay.port" (.Values.config.ingest.RELAY_INGEST_HTTP_ADDR | default ":8081") }}
{{- end }}

{{/* RELAY_ADMIN_ADDR's port, or "" when unset (metrics and health stay on the tiers' HTTP ports). */}}
{{- define "relay.adminPort" -}}
{{- with .Values.config.common.RELAY_ADMIN_ADDR }}{{ include "relay.port" . }}{{ end }}
{{- end }}

{{- define "relay.fanout.httpPort" -}}
{{- include "relay.port" (.Values.config.fanout.RELAY_FANOUT_ADDR | default ":8080") }}
{{- end }}

{{/* Seconds in a Go duration such as "20s", "1m30s" or "500ms" (rounded up). */}}
{{- define "relay.durationSeconds" -}}
{{- $total := 0.0 }}
{{- range $m := regexFindAll "[0-9.]+(ms|h|m|s)" (toString .) -1 }}
{{- $n := regexFind "^[0-9.]+" $m | float64 }}
{{- $u := regexFind "(ms|h|m|s)$" $m }}
{{- if eq $u "h" }}{{ $total = addf $total (mulf $n 3600) }}
{{- else if eq $u "m" }}{{ $total = addf $total (mulf $n 60) }}
{{- else if eq $u "s" }}{{ $total = addf $total $n }}
{{- else }}{{ $total = addf $total (divf $n 1000) }}
{{- end }}
{{- end }}
{{- ceil $total | int }}
{{- end }}

{{/* An env value as relay expects it: whole numbers from a values file
arrive as float64 and would print as 8.388608e+06. */}}
{{- define "relay.envValue" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* Names: the release name, unless it already contains the chart's ("rerankd" -> rerankd). */}}
{{- define "rerankd.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rerankd.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "rerankd.redisName" -}}
{{- printf "%s-redis" (include "rerankd.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rerankd.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: rerankd
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The rerankd server's pods. */}}
{{- define "rerankd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rerankd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rerankd.labels" -}}
{{ include "rerankd.selectorLabels" . }}
app.kubernetes.io/component: server
{{ include "rerankd.commonLabels" . }}
{{- end }}

{{/* The Redis cache's pods. */}}
{{- define "rerankd.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "rerankd.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rerankd.redisLabels" -}}
{{ include "rerankd.redisSelectorLabels" . }}
app.kubernetes.io/component: cache
{{ include "rerankd.commonLabels" . }}
{{- end }}

{{- define "rerankd.image" -}}
{{- $tag := .Values.image.tag | default (printf "%s-%s" .Chart.AppVersion .Values.image.flavor) }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{- define "rerankd.apiKeysSecret" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "rerankd.fullname" .)) }}
{{- end }}

{{/* Where the Secret and the registrations ConfigMap are mounted. */}}
{{- define "rerankd.secretsDir" -}}/etc/rerankd/secrets{{- end }}
{{- define "rerankd.registrationsDir" -}}/etc/rerankd/registrations{{- end }}

{{/* RERANKD_* settings: the values' own, plus the ones the chart wires up. */}}
{{- define "rerankd.settings" -}}
{{- $settings := dict }}
{{- range $key, $value := .Values.settings }}
{{- if not (kindIs "invalid" $value) }}
{{- $_ := set $settings $key (toString $value) }}
{{- end }}
{{- end }}
{{- if .Values.redis.url }}
{{- $_ := set $settings "RERANKD_REDIS_URL" .Values.redis.url }}
{{- else if .Values.redis.enabled }}
{{- $_ := set $settings "RERANKD_REDIS_URL" (printf "redis://%s:6379/0" (include "rerankd.redisName" .)) }}
{{- end }}
{{- if .Values.apiKeys.enabled }}
{{- $_ := set $settings "RERANKD_API_KEYS_FILE" (printf "%s/api-keys" (include "rerankd.secretsDir" .)) }}
{{- end }}
{{- if .Values.registrations }}
{{- $_ := set $settings "RERANKD_REGISTRATIONS_FILE" (printf "%s/registrations.json" (include "rerankd.registrationsDir" .)) }}
{{- end }}
{{- toYaml $settings }}
{{- end }}

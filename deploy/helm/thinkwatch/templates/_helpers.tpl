{{/* Names */}}
{{- define "thinkwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "thinkwatch.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "thinkwatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "thinkwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: pass (dict "root" $ "component" "gateway"). */}}
{{- define "thinkwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "thinkwatch.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "thinkwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "thinkwatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "thinkwatch.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "thinkwatch.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "thinkwatch.fullname" .) }}
{{- end }}

{{/* The pod's whole grace: the drain, run.py's own 10 s margin after it, the preStop
sleep, and room to spare. */}}
{{- define "thinkwatch.terminationGracePeriodSeconds" -}}
{{- add (int .Values.config.drainSeconds) 30 }}
{{- end }}

{{/* Settings every ThinkWatch container gets (the ConfigMap's data). */}}
{{- define "thinkwatch.configData" -}}
THINKWATCH_BIND: "0.0.0.0"
THINKWATCH_GATEWAY_PORT: {{ .Values.gateway.port | quote }}
THINKWATCH_CONSOLE_PORT: {{ .Values.console.port | quote }}
THINKWATCH_DRAIN_SECONDS: {{ .Values.config.drainSeconds | quote }}
THINKWATCH_ALLOWED_HOSTS: {{ prepend .Values.config.allowedHosts "localhost" | uniq | join "," | quote }}
THINKWATCH_CSRF_TRUSTED_ORIGINS: {{ join "," .Values.config.csrfTrustedOrigins | quote }}
THINKWATCH_SECURE_COOKIES: {{ .Values.config.secureCookies | quote }}
THINKWATCH_TRUSTED_PROXIES: {{ join "," .Values.config.trustedProxies | quote }}
THINKWATCH_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
{{- with .Values.config.gatewayPublicUrl }}
THINKWATCH_GATEWAY_PUBLIC_URL: {{ . | quote }}
{{- end }}
{{- with .Values.config.consolePublicUrl }}
THINKWATCH_CONSOLE_PUBLIC_URL: {{ . | quote }}
{{- end }}
{{- range $name, $value := .Values.config.extra }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* The Secret's data when the chart makes it: the four required values, and the optional
ones that are set. */}}
{{- define "thinkwatch.secretData" -}}
{{- $s := .Values.secrets -}}
THINKWATCH_SECRET_KEY: {{ required "secrets.secretKey is required (or secrets.existingSecret)" $s.secretKey | b64enc | quote }}
THINKWATCH_MASTER_KEY: {{ required "secrets.masterKey is required (or secrets.existingSecret)" $s.masterKey | b64enc | quote }}
DATABASE_URL: {{ required "secrets.databaseUrl is required (or secrets.existingSecret)" $s.databaseUrl | b64enc | quote }}
REDIS_URL: {{ required "secrets.redisUrl is required (or secrets.existingSecret)" $s.redisUrl | b64enc | quote }}
{{- with $s.clickhouseUrl }}
CLICKHOUSE_URL: {{ . | b64enc | quote }}
{{- end }}
{{- with $s.previousMasterKeys }}
THINKWATCH_PREVIOUS_MASTER_KEYS: {{ . | b64enc | quote }}
{{- end }}
{{- with $s.metricsBearerToken }}
METRICS_BEARER_TOKEN: {{ . | b64enc | quote }}
{{- end }}
{{- with $s.emailUrl }}
EMAIL_URL: {{ . | b64enc | quote }}
{{- end }}
{{- with $s.webhookSecret }}
THINKWATCH_WEBHOOK_SECRET: {{ . | b64enc | quote }}
{{- end }}
{{- end }}

{{/* What every ThinkWatch pod shares: pass (dict "root" $ "configMap" NAME "secret" NAME). */}}
{{- define "thinkwatch.podSpec" -}}
{{- $root := .root -}}
serviceAccountName: {{ include "thinkwatch.serviceAccountName" $root }}
automountServiceAccountToken: false
# Service links would put THINKWATCH_GATEWAY_PORT=tcp://... for a Service named
# thinkwatch-gateway into the environment, where the port number belongs.
enableServiceLinks: false
terminationGracePeriodSeconds: {{ include "thinkwatch.terminationGracePeriodSeconds" $root }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "thinkwatch.envFrom" -}}
envFrom:
  - configMapRef:
      name: {{ .configMap }}
  - secretRef:
      name: {{ .secret }}
{{- with .root.Values.extraEnv }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Volumes: /tmp, the audit spool; beat also gets a writable data directory for its
schedule file (pass "dataDir" true). */}}
{{- define "thinkwatch.volumes" -}}
volumes:
  - name: tmp
    emptyDir: {}
  - name: auditq
    {{- toYaml .root.Values.auditSpool.volume | nindent 4 }}
{{- if .dataDir }}
  - name: data
    emptyDir: {}
{{- end }}
{{- end }}

{{- define "thinkwatch.volumeMounts" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- if .dataDir }}
  - name: data
    mountPath: /var/lib/thinkwatch
{{- end }}
  - name: auditq
    mountPath: /var/lib/thinkwatch/auditq
{{- end }}

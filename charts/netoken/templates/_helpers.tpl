{{/*
Labels on every object. Names are fixed (netoken-operator, netoken-agent): the API is
cluster-scoped, so a cluster runs one installation.
*/}}
{{- define "netoken.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: netoken
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: netoken
{{- end }}

{{/* Labels that select one component's pods; call with (dict "ctx" $ "component" "agent"). */}}
{{- define "netoken.selectorLabels" -}}
app.kubernetes.io/name: netoken
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's objects; call with (dict "ctx" $ "component" "agent"). */}}
{{- define "netoken.componentLabels" -}}
{{ include "netoken.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image reference: by digest when one is given, else by tag (default: appVersion). */}}
{{- define "netoken.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* The agent's ServiceAccount user name, as the API server authenticates it. */}}
{{- define "netoken.agentUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:netoken-agent
{{- end }}

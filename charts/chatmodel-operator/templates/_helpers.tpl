{{/* Names, labels and shared fragments of the chatmodel-operator chart. */}}

{{- define "chatmodel-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* RELEASE-chatmodel-operator, or the release name alone when it already says so. */}}
{{- define "chatmodel-operator.fullname" -}}
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

{{- define "chatmodel-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator pods; never change them after a release (immutable selector). */}}
{{- define "chatmodel-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chatmodel-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "chatmodel-operator.labels" -}}
helm.sh/chart: {{ include "chatmodel-operator.chart" . }}
{{ include "chatmodel-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chatmodel-operator
{{- end }}

{{- define "chatmodel-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chatmodel-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "chatmodel-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Peering only matters when several replicas could act at once. */}}
{{- define "chatmodel-operator.peering" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end }}
{{- end }}

{{/* Fails rendering when the cluster does not serve an API a value needs:
     include "chatmodel-operator.requireAPI" (list . "monitoring.coreos.com/v1/PrometheusRule" "metrics.prometheusRule.enabled") */}}
{{- define "chatmodel-operator.requireAPI" -}}
{{- $root := index . 0 }}{{- $api := index . 1 }}{{- $value := index . 2 }}
{{- if and $root.Values.metrics.checkAPIs (not ($root.Capabilities.APIVersions.Has $api)) }}
{{- $parts := splitList "/" $api }}
{{- fail (printf "%s=true needs the API %s (kind %s), which this cluster does not serve: install its CRD first (the Prometheus operator, for example kube-prometheus-stack), or set %s=false. Rendering without a cluster (helm template)? Pass --api-versions %s, or set metrics.checkAPIs=false." $value (printf "%s/%s" (index $parts 0) (index $parts 1)) (index $parts 2) $value $api) }}
{{- end }}
{{- end }}

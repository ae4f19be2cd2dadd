#!/bin/sh
# Spark on Kubernetes starts each executor pod with the argument "executor" and its settings in
# the environment, expecting Spark's own image entrypoint. This image's ENTRYPOINT is the job
# CLI, so the executor pod template (executor-pod.json, spark.kubernetes.executor.podTemplateFile)
# points the container here: the same JVM command Spark's entrypoint runs, with the locked jars.
set -eu
if [ "${1:-}" != executor ]; then
    echo "usage: $0 executor (started by Spark's Kubernetes backend)" >&2
    exit 2
fi
# SPARK_JAVA_OPT_<n>: one JVM option each (Spark sets them; none holds a space).
# shellcheck disable=SC2046
exec "$JAVA_HOME/bin/java" $(env | sed -n 's/^SPARK_JAVA_OPT_[0-9]*=//p') \
    -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
    -cp "${SPARK_CLASSPATH:-}:$SPARK_HOME/jars/*:$CARTFLOW_JARS_DIR/*" \
    org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
    --driver-url "$SPARK_DRIVER_URL" --executor-id "$SPARK_EXECUTOR_ID" --cores "$SPARK_EXECUTOR_CORES" \
    --app-id "$SPARK_APPLICATION_ID" --hostname "$SPARK_EXECUTOR_POD_IP" \
    --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" --podName "$SPARK_EXECUTOR_POD_NAME"

# Stand-in for prom/prometheus:v2.42.0: Debian's prometheus 2.42.0 binaries in the official
# layout (user nobody, /prometheus, /etc/prometheus), plus wget for the health check.
ARG BASE
FROM ${BASE}
COPY prometheus promtool /bin/
COPY prometheus.yml /etc/prometheus/prometheus.yml
RUN mkdir -p /prometheus && chown -R 65534:65534 /prometheus /etc/prometheus \
 && /bin/prometheus --version
USER 65534
WORKDIR /prometheus
EXPOSE 9090
VOLUME ["/prometheus"]
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]

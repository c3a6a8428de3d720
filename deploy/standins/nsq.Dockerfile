# Stand-in for nsqio/nsq:v1.3.0: our Go-built NSQ v1.3.0 binaries (make setup) at / as in the
# official image, plus wget for the health checks. Built by deploy/standins/build.sh.
ARG BASE
FROM ${BASE}
COPY nsqd nsqlookupd nsqadmin nsq_tail nsq_to_file /
RUN mkdir -p /data && /nsqd --version
EXPOSE 4150 4151 4160 4161 4170 4171

# Stand-in for python:3.11-slim: Debian bookworm's python3 (3.11) in the official layout.
# Built by deploy/standins/build.sh from a debootstrap root file system; see docs/deployment.md.
ARG BASE
FROM ${BASE}
RUN ln -s /usr/bin/python3 /usr/local/bin/python \
 && ln -s /usr/bin/python3 /usr/local/bin/python3 \
 && ln -s /usr/bin/python3.11 /usr/local/bin/python3.11 \
 && python -m venv --help >/dev/null
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHON_VERSION=3.11
CMD ["python3"]

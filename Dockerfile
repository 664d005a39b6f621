# Hugging Face Space (Docker SDK): the same set-up as the README's quick start (`make run`), plus the Debian
# package with the Fashion-MNIST test images that the app's bundled test records use.
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends make dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*
RUN useradd -m -u 1000 user
USER user
WORKDIR /home/user/app
# PyPI's Linux torch wheel depends on CUDA libraries (gigabytes); the CPU index's 2.13.0+cpu satisfies the same
# pin (torch==2.13.0) and sorts above it, so pip takes it (not verified from this project's offline machines)
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --chown=user . .
RUN make setup
EXPOSE 8501
# A Space serves the app in an iframe, where browsers drop Streamlit's XSRF cookie and uploads fail with 403:
# Hugging Face's Spaces documentation (cookie limitations) gives this flag; local runs keep the protection
CMD ["make", "run", "STREAMLIT_ARGS=--server.address=0.0.0.0 --server.port=8501 --server.enableXsrfProtection=false"]

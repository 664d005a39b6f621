# Hugging Face Space (Docker SDK): the same set-up as the README's quick start (`make run`).
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends make dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*
RUN useradd -m -u 1000 user
USER user
WORKDIR /home/user/app
COPY --chown=user . .
RUN make setup
EXPOSE 8501
CMD ["make", "run", "STREAMLIT_ARGS=--server.address=0.0.0.0 --server.port=8501"]

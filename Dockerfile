# bert-tf on GPUs: official TensorFlow 2.21 GPU image + OpenMPI + Horovod built with NCCL, by the
# same scripts/setup.sh as every other machine (GPU switches: TF_PACKAGE, HOROVOD_GPU_OPERATIONS,
# EXTRAS). Build: docker build -t bert-tf .   Run: docker run --gpus all bert-tf
FROM tensorflow/tensorflow:2.21.0-gpu

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    VENV=/opt/bert-tf/.venv \
    BERT_TF_CACHE=/tmp/bert-tf-cache \
    TF_PACKAGE=tensorflow[and-cuda]==2.21.0 \
    HOROVOD_GPU_OPERATIONS=NCCL \
    EXTRAS=convert

WORKDIR /opt/bert-tf
# The project is installed in editable mode, so its modules must be in place before set-up.
COPY . .
RUN bash scripts/setup.sh && rm -rf "$BERT_TF_CACHE" /root/.cache/pip
ENV PATH=$VENV/bin:$PATH
CMD ["python", "run_pretraining.py", "--helpfull"]

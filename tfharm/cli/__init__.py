"""What tfharm's commands share: exit codes and error handling (`program`), quiet TensorFlow
start-up (`quiet`), and checks of output locations before any work starts (`outputs`).
None of these modules imports TensorFlow."""

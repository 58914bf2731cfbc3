// Signature stub of org.pytorch.executorch.EValue (executorch-android), for compiling docs only.
package org.pytorch.executorch;

public class EValue {
  public static EValue from(Tensor tensor) { throw new UnsupportedOperationException(); }
  public boolean isTensor() { throw new UnsupportedOperationException(); }
  public Tensor toTensor() { throw new UnsupportedOperationException(); }
}

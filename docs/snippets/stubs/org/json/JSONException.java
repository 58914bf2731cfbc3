// Signature stub of org.json.JSONException (Android SDK), for compiling docs only.
package org.json;

public class JSONException extends RuntimeException {
  public JSONException(String message) { super(message); }
}

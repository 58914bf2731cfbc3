// Signature stub of org.json.JSONArray (Android SDK), for compiling docs only.
package org.json;

public class JSONArray {
  public int length() { throw new UnsupportedOperationException(); }
  public int getInt(int index) throws JSONException { throw new UnsupportedOperationException(); }
  public double getDouble(int index) throws JSONException { throw new UnsupportedOperationException(); }
  public String getString(int index) throws JSONException { throw new UnsupportedOperationException(); }
}
